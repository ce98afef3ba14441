// The sidecar's L4 forwarder: accepts redirected connections, reads their original destination,
// asks JavaScript where each one goes, connects there and then copies bytes both ways itself.
//
// Why native: copying in JavaScript (net.Socket streams) cost 17 us of one core per 64-byte
// request/response and 145 us per new connection in bench:sidecar, against HAProxy's 11.5 and 67;
// most of the gap was Node's stream machinery and two socket objects per connection. No library
// does this for Node. Routing, balancing, retries and metrics stay in JavaScript: it is called
// once per accepted connection, once per connect outcome and once at close.
//
// It runs on Node's own event loop, not on a thread: one epoll set, watched by a libuv poll
// handle, so JavaScript callbacks are plain calls (no cross-thread hand-off per connection) and
// nothing needs a lock. Level-triggered; a direction stops reading while the other side has
// unwritten bytes (backpressure), and an end of stream is passed on as a half-close.
//
// Lifetime: the JavaScript functions returned by createForwarder carry a pointer to the
// forwarder, and JavaScript may call them at any time, even after destroy(). So the forwarder
// struct is counted: one reference per function (dropped by its finalizer when the function is
// collected) and one for the event loop's handles (dropped once libuv has closed them). destroy()
// frees the connections and buffers; the struct itself, with `destroyed` set, stays until the last
// reference goes, so a late call throws ERR_FORWARDER_DESTROYED instead of reading freed memory.
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <linux/netfilter_ipv4.h>
#include <math.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>
#include <uv.h>

#include "addon.h"

#ifndef IP6T_SO_ORIGINAL_DST
#define IP6T_SO_ORIGINAL_DST 80
#endif
#ifndef IP_BIND_ADDRESS_NO_PORT
#define IP_BIND_ADDRESS_NO_PORT 24
#endif

#define KIND_LISTENER 1u
#define KIND_CONNECTION 2u
#define MAX_LISTENERS 8
#define EVENTS_PER_WAKE 256
#define ROUNDS_PER_WAKE 4
#define ACCEPTS_PER_WAKE 64
#define READS_PER_EVENT 8
#define COPY_BUFFER_SIZE (64 * 1024) // also the most a stalled direction holds in memory
#define NO_SLOT UINT32_MAX
#define GENERATION_MASK 0xFFFFFu // ids stay below 2^53, exact as JavaScript numbers
#define MAX_ID 4503599627370495.0 // 2^52 - 1: generation (20 bits) and slot (32 bits)
#define EXPIRED_PER_SCAN 256      // connect deadlines handled per timer run; more re-arm it at once
// Idle connections are found by a sweep of the table every 1/8 of the idle timeout (at least
// 10 ms, at most a minute apart): a forwarded byte costs one timestamp store, not a timer update.
#define SWEEP_DIVISOR 8
#define SWEEP_MIN_MS 10
#define SWEEP_MAX_MS 60000
#define MAX_TIMEOUT_MS 604800000.0 // 7 days: longer timeouts are capped there
#define METHOD_COUNT 9
// TCP keepalive on both sockets of a forwarded connection: a peer that vanished without a FIN or
// RST (a host powered off, a NAT entry dropped) is found after 5 min of silence plus 4 probes
// 30 s apart, instead of holding two file descriptors and their buffers until the idle timeout.
#define KEEPALIVE_IDLE_S 300
#define KEEPALIVE_INTERVAL_S 30
#define KEEPALIVE_PROBES 4

enum { CLIENT = 0, UPSTREAM = 1 };
enum state { FREE, ACCEPTED, CONNECTING, FORWARDING };
// index.ts's ForwardOutcome
enum outcome { OUTCOME_CLEAN = 0, OUTCOME_UPSTREAM_FAILED = 1, OUTCOME_CLIENT_FAILED = 2, OUTCOME_IDLE_TIMEOUT = 3, OUTCOME_LOCAL_FAILURE = 4 };

typedef struct {
  char *data;
  size_t offset, length;
} queued_bytes;

typedef struct connection {
  uint32_t slot, generation;
  enum state state;
  int fd[2];
  uint32_t interest[2]; // events registered for fd[side]; 0 with registered[side] false: not in the set
  bool registered[2];
  bool ended[2];          // side sent its end of stream (we read 0)
  bool parked[2];         // hung up (orderly) while not being read: out of the set until it is
  queued_bytes queued[2]; // read from side, not yet written to the other
  uint64_t bytes[2], reported[2];
  uint64_t connect_deadline;
  uint64_t last_active; // loop time of the last byte moved either way, for the idle timeout
  struct connection *next_connecting, *previous_connecting;
  uint32_t next_free;
} connection;

typedef struct {
  int fd, family, tag;
  uint16_t port;
  bool paused, redirected;
} listener;

typedef struct {
  napi_env env;
  napi_ref on_accept, on_connect, on_close, resource;
  napi_async_context async_context;
  uv_poll_t poll;
  uv_timer_t timer;
  uv_timer_t sweep; // idle timeouts; runs while connections forward and the timeout is set
  uint64_t idle_timeout_ms;
  uint64_t turn_time; // the loop's time when this wake-up started: the activity stamp
  bool sweeping;
  int epoll_fd;
  listener listeners[MAX_LISTENERS];
  int listener_count;
  connection **slots;
  uint32_t slot_count, slot_capacity, free_head, live;
  connection *connecting; // connections waiting for connect(), for their deadlines
  uint64_t timer_due;
  bool listeners_paused, destroyed;
  // Entered before the first JavaScript call of an event-loop turn, left at its end: a turn that
  // only moves bytes (most of them, under load) never pays for the scopes.
  bool in_javascript;
  napi_handle_scope turn_scope;
  napi_callback_scope turn_callback_scope;
  int open_handles;
  int references; // see 'Lifetime' at the top
  bool javascript_released;
  char *buffer;
} forwarder;

// ---- connections table: slot + generation ids, so a stale id or event never reaches a new one

static double id_of(const connection *c) { return (double)c->generation * 4294967296.0 + (double)c->slot; }

static connection *lookup(forwarder *f, double id) {
  if (!(id >= 0)) return NULL;
  uint64_t raw = (uint64_t)id;
  uint32_t slot = (uint32_t)(raw & 0xFFFFFFFFu), generation = (uint32_t)(raw >> 32);
  if (slot >= f->slot_count) return NULL;
  connection *c = f->slots[slot];
  return c->state != FREE && c->generation == generation ? c : NULL;
}

static connection *allocate(forwarder *f) {
  connection *c;
  if (f->free_head != NO_SLOT) {
    c = f->slots[f->free_head];
    f->free_head = c->next_free;
  } else {
    if (f->slot_count == f->slot_capacity) {
      uint32_t capacity = f->slot_capacity ? f->slot_capacity * 2 : 256;
      connection **grown = realloc(f->slots, capacity * sizeof *grown);
      if (!grown) return NULL;
      f->slots = grown;
      f->slot_capacity = capacity;
    }
    c = calloc(1, sizeof *c);
    if (!c) return NULL;
    c->slot = f->slot_count;
    f->slots[f->slot_count++] = c;
  }
  uint32_t generation = (c->generation + 1) & GENERATION_MASK;
  uint32_t slot = c->slot;
  memset(c, 0, sizeof *c);
  c->slot = slot;
  c->generation = generation;
  c->fd[CLIENT] = c->fd[UPSTREAM] = -1;
  f->live++;
  return c;
}

// 0, or the errno of a failed registration.
static int watch_listener(forwarder *f, int index, uint32_t events, int operation) {
  struct epoll_event event = {.events = events, .data.u64 = ((uint64_t)index << 8) | KIND_LISTENER};
  return epoll_ctl(f->epoll_fd, operation, f->listeners[index].fd, &event) == 0 ? 0 : errno;
}

static void resume_listeners(forwarder *f) {
  f->listeners_paused = false;
  for (int i = 0; i < f->listener_count; i++) {
    listener *l = &f->listeners[i];
    if (!l->paused || l->fd < 0) continue;
    // Not resumed (out of memory in the kernel): stays paused, tried again at the next close or tick.
    if (watch_listener(f, i, EPOLLIN, EPOLL_CTL_MOD) != 0) f->listeners_paused = true;
    else l->paused = false;
  }
}

static void release_slot(forwarder *f, connection *c) {
  for (int side = 0; side < 2; side++) {
    free(c->queued[side].data);
    c->queued[side].data = NULL;
  }
  c->state = FREE;
  c->next_free = f->free_head;
  f->free_head = c->slot;
  f->live--;
  // A listener paused for want of file descriptors may accept again.
  if (f->listeners_paused) resume_listeners(f);
}

static uint64_t event_data(const connection *c, int side) {
  return ((uint64_t)c->generation << 40) | ((uint64_t)c->slot << 8) | ((uint64_t)side << 4) | KIND_CONNECTION;
}

// 0, or the errno of a failed registration: the socket would never be watched again, so the
// caller must give the connection up rather than leave it hanging with its file descriptors.
static int set_interest(forwarder *f, connection *c, int side, uint32_t events) {
  if (c->registered[side] && c->interest[side] == events) return 0;
  if (!c->registered[side] && c->parked[side] && events == 0) return 0;
  struct epoll_event event = {.events = events, .data.u64 = event_data(c, side)};
  if (epoll_ctl(f->epoll_fd, c->registered[side] ? EPOLL_CTL_MOD : EPOLL_CTL_ADD, c->fd[side], &event) != 0) return errno;
  c->parked[side] = false;
  c->registered[side] = true;
  c->interest[side] = events;
  return 0;
}

// What each socket waits for while forwarding: reading while its bytes can go on, writing while
// bytes for it wait. 0, or the errno of a failed registration.
static int update_interest(forwarder *f, connection *c) {
  for (int side = 0; side < 2; side++) {
    uint32_t events = 0;
    if (!c->ended[side] && !c->queued[side].data) events |= EPOLLIN;
    if (c->queued[1 - side].data) events |= EPOLLOUT;
    int error = set_interest(f, c, side, events);
    if (error) return error;
  }
  return 0;
}

// ---- connect deadlines: a list scanned by one timer; only connections mid-connect are in it

static void unlist_connecting(forwarder *f, connection *c) {
  if (c->previous_connecting) c->previous_connecting->next_connecting = c->next_connecting;
  else if (f->connecting == c) f->connecting = c->next_connecting;
  if (c->next_connecting) c->next_connecting->previous_connecting = c->previous_connecting;
  c->next_connecting = c->previous_connecting = NULL;
}

static void timer_fired(uv_timer_t *timer);

static void arm_timer(forwarder *f, uint64_t due) {
  if (f->destroyed || (f->timer_due && f->timer_due <= due)) return;
  uint64_t now = uv_now(f->poll.loop);
  f->timer_due = due;
  uv_timer_start(&f->timer, timer_fired, due > now ? due - now : 0, 0);
}

// ---- calling JavaScript from the event loop

static void enter_javascript(forwarder *f) {
  if (f->in_javascript) return;
  f->in_javascript = true;
  napi_open_handle_scope(f->env, &f->turn_scope);
  napi_value resource;
  napi_get_reference_value(f->env, f->resource, &resource);
  // Promise jobs and nextTicks queued by the callbacks run when the scope closes, as after any
  // I/O callback.
  napi_open_callback_scope(f->env, resource, f->async_context, &f->turn_callback_scope);
}

static void release_javascript(forwarder *f);

static void leave_javascript(forwarder *f) {
  if (!f->in_javascript) return;
  f->in_javascript = false;
  napi_close_callback_scope(f->env, f->turn_callback_scope);
  napi_close_handle_scope(f->env, f->turn_scope);
  // destroy() called from a callback of this turn leaves the callbacks and the async context to
  // here: the scope opened with them had to close first.
  if (f->destroyed) release_javascript(f);
}

static void call(forwarder *f, napi_ref function_ref, size_t argc, napi_value *argv) {
  napi_env env = f->env;
  napi_value function, receiver, result;
  napi_get_reference_value(env, function_ref, &function);
  napi_get_undefined(env, &receiver);
  if (napi_call_function(env, receiver, function, argc, argv, &result) == napi_pending_exception) {
    napi_value error;
    napi_get_and_clear_last_exception(env, &error);
    napi_fatal_exception(env, error); // the process's uncaughtException, as any callback's throw would be
  }
}

static napi_value number(napi_env env, double value) {
  napi_value v;
  napi_create_double(env, value, &v);
  return v;
}

static napi_value address_text(napi_env env, const struct sockaddr_storage *address, uint16_t *port) {
  char text[INET6_ADDRSTRLEN] = "";
  if (address->ss_family == AF_INET6) {
    const struct sockaddr_in6 *a6 = (const struct sockaddr_in6 *)address;
    inet_ntop(AF_INET6, &a6->sin6_addr, text, sizeof text);
    *port = ntohs(a6->sin6_port);
  } else {
    const struct sockaddr_in *a4 = (const struct sockaddr_in *)address;
    inet_ntop(AF_INET, &a4->sin_addr, text, sizeof text);
    *port = ntohs(a4->sin_port);
  }
  napi_value v;
  napi_create_string_latin1(env, text, NAPI_AUTO_LENGTH, &v);
  return v;
}

static void report_close(forwarder *f, connection *c, enum outcome outcome) {
  enter_javascript(f);
  napi_handle_scope scope;
  napi_open_handle_scope(f->env, &scope);
  napi_value argv[4] = {number(f->env, id_of(c)), number(f->env, (double)(c->bytes[CLIENT] - c->reported[CLIENT])),
                        number(f->env, (double)(c->bytes[UPSTREAM] - c->reported[UPSTREAM])), number(f->env, outcome)};
  call(f, f->on_close, 4, argv);
  napi_close_handle_scope(f->env, scope);
}

// ---- forwarding

static void abortive_close(int fd) {
  struct linger linger = {.l_onoff = 1, .l_linger = 0};
  setsockopt(fd, SOL_SOCKET, SO_LINGER, &linger, sizeof linger);
  close(fd);
}

static void finish(forwarder *f, connection *c, enum outcome outcome) {
  // A failure on one side is passed on as a reset to the other rather than a clean end that
  // would hide it; the forwarder's own reasons (idle, a local failure) reset both.
  for (int side = 0; side < 2; side++) {
    if (c->fd[side] < 0) continue;
    bool reset = (outcome == OUTCOME_UPSTREAM_FAILED && side == CLIENT) || (outcome == OUTCOME_CLIENT_FAILED && side == UPSTREAM) ||
                 outcome == OUTCOME_IDLE_TIMEOUT || outcome == OUTCOME_LOCAL_FAILURE;
    if (reset) abortive_close(c->fd[side]);
    else close(c->fd[side]);
    c->fd[side] = -1;
  }
  release_slot(f, c);
  report_close(f, c, outcome);
}

static void fail_side(forwarder *f, connection *c, int side) {
  finish(f, c, side == UPSTREAM ? OUTCOME_UPSTREAM_FAILED : OUTCOME_CLIENT_FAILED);
}

static bool queue(connection *c, int side, const char *data, size_t length) {
  char *copy = malloc(length);
  if (!copy) return false;
  memcpy(copy, data, length);
  c->queued[side] = (queued_bytes){.data = copy, .offset = 0, .length = length};
  return true;
}

// Bytes from `side` to the other one, until the socket is drained, the other cannot take more,
// or either ends.
static void pump(forwarder *f, connection *c, int side) {
  int from = c->fd[side], to = c->fd[1 - side];
  for (int round = 0; round < READS_PER_EVENT; round++) {
    ssize_t n = recv(from, f->buffer, COPY_BUFFER_SIZE, 0);
    if (n > 0) {
      c->bytes[side] += (uint64_t)n;
      c->last_active = f->turn_time;
      ssize_t written = send(to, f->buffer, (size_t)n, MSG_NOSIGNAL);
      if (written < 0) {
        if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
          fail_side(f, c, 1 - side);
          return;
        }
        written = 0;
      }
      if (written < n) {
        if (!queue(c, side, f->buffer + written, (size_t)(n - written))) {
          fail_side(f, c, side);
          return;
        }
        if (update_interest(f, c)) finish(f, c, OUTCOME_LOCAL_FAILURE);
        return;
      }
      // A short read almost always means the socket is drained: level-triggered epoll says
      // so again if not, which saves the recv() that would answer EAGAIN.
      if (n < COPY_BUFFER_SIZE) return;
      continue;
    }
    if (n == 0) {
      c->ended[side] = true;
      shutdown(to, SHUT_WR);
      if (c->ended[1 - side]) finish(f, c, OUTCOME_CLEAN);
      else if (update_interest(f, c)) finish(f, c, OUTCOME_LOCAL_FAILURE);
      return;
    }
    if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) return;
    fail_side(f, c, side);
    return;
  }
}

// Writes what waits for the other side of `side`'s bytes.
static void flush(forwarder *f, connection *c, int side) {
  queued_bytes *q = &c->queued[side];
  ssize_t written = send(c->fd[1 - side], q->data + q->offset, q->length - q->offset, MSG_NOSIGNAL);
  if (written < 0) {
    if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) return;
    fail_side(f, c, 1 - side);
    return;
  }
  q->offset += (size_t)written;
  c->last_active = f->turn_time;
  if (q->offset < q->length) return;
  free(q->data);
  *q = (queued_bytes){0};
  if (update_interest(f, c)) finish(f, c, OUTCOME_LOCAL_FAILURE);
}

static int socket_error(int fd) {
  int error = 0;
  socklen_t length = sizeof error;
  if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &error, &length) != 0) return errno;
  return error;
}

static void report_connect(forwarder *f, connection *c, int error) {
  enter_javascript(f);
  napi_handle_scope scope;
  napi_open_handle_scope(f->env, &scope);
  napi_value argv[2] = {number(f->env, id_of(c)), number(f->env, error)};
  call(f, f->on_connect, 2, argv);
  napi_close_handle_scope(f->env, scope);
}

static void start_sweeping(forwarder *f);

// The upstream connect ended, one way or the other: forwarding starts, or JavaScript decides
// what next (another endpoint, or a reset).
static void connect_done(forwarder *f, connection *c, int error) {
  unlist_connecting(f, c);
  if (error == 0) {
    c->state = FORWARDING;
    c->last_active = uv_now(f->poll.loop);
    error = update_interest(f, c);
    // Not watched, it could never forward: reported as a failed connect, as if the endpoint had
    // refused, so JavaScript tries another or resets it.
    if (error && c->registered[CLIENT]) {
      epoll_ctl(f->epoll_fd, EPOLL_CTL_DEL, c->fd[CLIENT], NULL);
      c->registered[CLIENT] = false;
    }
    if (!error) start_sweeping(f);
  }
  if (error) {
    close(c->fd[UPSTREAM]); // also leaves the epoll set
    c->fd[UPSTREAM] = -1;
    c->registered[UPSTREAM] = false;
    c->state = ACCEPTED;
  }
  report_connect(f, c, error);
}

static void connection_event(forwarder *f, uint64_t data, uint32_t events) {
  uint32_t slot = (uint32_t)((data >> 8) & 0xFFFFFFFFu), generation = (uint32_t)(data >> 40);
  int side = (int)((data >> 4) & 1u);
  if (slot >= f->slot_count) return;
  connection *c = f->slots[slot];
  if (c->state == FREE || c->generation != generation) return; // closed earlier in this batch
  if (c->state == CONNECTING) {
    if (side == UPSTREAM) connect_done(f, c, socket_error(c->fd[UPSTREAM]));
    return;
  }
  if (c->state != FORWARDING) return;
  bool handled = false;
  if ((events & (EPOLLIN | EPOLLHUP | EPOLLERR)) && (c->interest[side] & EPOLLIN)) {
    pump(f, c, side);
    handled = true;
    if (c->state != FORWARDING || c->generation != generation) return;
  }
  if ((events & (EPOLLOUT | EPOLLHUP | EPOLLERR)) && c->queued[1 - side].data) {
    flush(f, c, 1 - side);
    handled = true;
    if (c->state != FORWARDING || c->generation != generation) return;
  }
  if (handled || !(events & (EPOLLHUP | EPOLLERR))) return;
  // A hang-up while this side is not read: an error fails the connection; an orderly one (its
  // end arrived while its bytes wait for the other side to drain) is reported again and again by
  // level-triggered epoll, which cannot mask it: the socket leaves the set until it is read again.
  if ((events & EPOLLERR) || socket_error(c->fd[side]) != 0) {
    fail_side(f, c, side);
    return;
  }
  if (epoll_ctl(f->epoll_fd, EPOLL_CTL_DEL, c->fd[side], NULL) != 0) {
    finish(f, c, OUTCOME_LOCAL_FAILURE); // it would be reported again forever
    return;
  }
  c->registered[side] = false;
  c->interest[side] = 0;
  c->parked[side] = true;
}

// ---- accepting

static int read_original_destination(int fd, int family, struct sockaddr_storage *destination) {
  socklen_t length = sizeof *destination;
  memset(destination, 0, sizeof *destination);
  if (family == AF_INET6) return getsockopt(fd, SOL_IPV6, IP6T_SO_ORIGINAL_DST, destination, &length);
  return getsockopt(fd, SOL_IP, SO_ORIGINAL_DST, destination, &length);
}

static uint16_t port_of(const struct sockaddr_storage *a) {
  return ntohs(a->ss_family == AF_INET6 ? ((const struct sockaddr_in6 *)a)->sin6_port : ((const struct sockaddr_in *)a)->sin_port);
}

// Dialled the listener itself (nothing redirected it): forwarding would come straight back.
static bool is_listener_itself(int fd, const struct sockaddr_storage *destination) {
  struct sockaddr_storage local;
  socklen_t length = sizeof local;
  if (getsockname(fd, (struct sockaddr *)&local, &length) != 0 || local.ss_family != destination->ss_family) return false;
  if (local.ss_family == AF_INET6)
    return memcmp(&((struct sockaddr_in6 *)&local)->sin6_addr, &((const struct sockaddr_in6 *)destination)->sin6_addr, 16) == 0;
  return ((struct sockaddr_in *)&local)->sin_addr.s_addr == ((const struct sockaddr_in *)destination)->sin_addr.s_addr;
}

static void pause_listeners(forwarder *f) {
  f->listeners_paused = true;
  for (int i = 0; i < f->listener_count; i++) {
    listener *l = &f->listeners[i];
    if (l->fd < 0 || l->paused) continue;
    // Not paused: the next accept fails the same way and pauses it again.
    if (watch_listener(f, i, 0, EPOLL_CTL_MOD) == 0) l->paused = true;
  }
  arm_timer(f, uv_now(f->poll.loop) + 100);
}

static void accept_ready(forwarder *f, int index) {
  listener *l = &f->listeners[index];
  for (int i = 0; i < ACCEPTS_PER_WAKE && l->fd >= 0 && !f->destroyed; i++) {
    struct sockaddr_storage peer;
    socklen_t peer_length = sizeof peer;
    int fd = accept4(l->fd, (struct sockaddr *)&peer, &peer_length, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno == EINTR || errno == ECONNABORTED) continue;
      // Out of file descriptors: stop accepting until a connection closes (or 100 ms pass)
      // instead of spinning on a listener that stays readable.
      if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) pause_listeners(f);
      return;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    struct sockaddr_storage destination;
    bool known = l->redirected && read_original_destination(fd, l->family, &destination) == 0;
    if (known && port_of(&destination) == l->port && is_listener_itself(fd, &destination)) {
      close(fd);
      continue;
    }
    connection *c = allocate(f);
    if (!c) {
      abortive_close(fd);
      continue;
    }
    c->state = ACCEPTED;
    c->fd[CLIENT] = fd;
    enter_javascript(f);
    napi_env env = f->env;
    napi_handle_scope scope;
    napi_open_handle_scope(env, &scope);
    uint16_t destination_port = 0, peer_port = 0;
    napi_value destination_address, peer_address;
    if (known) destination_address = address_text(env, &destination, &destination_port);
    else napi_get_null(env, &destination_address);
    peer_address = address_text(env, &peer, &peer_port);
    napi_value argv[6] = {number(env, id_of(c)), number(env, l->tag), destination_address, number(env, destination_port), peer_address, number(env, peer_port)};
    call(f, f->on_accept, 6, argv);
    napi_close_handle_scope(env, scope);
  }
}

// ---- the event loop hooks

static void poll_ready(uv_poll_t *handle, int status, int events) {
  (void)status;
  (void)events;
  forwarder *f = handle->data;
  f->turn_time = uv_now(f->poll.loop);
  struct epoll_event ready[EVENTS_PER_WAKE];
  int count = epoll_wait(f->epoll_fd, ready, EVENTS_PER_WAKE, 0);
  // Under load, more events are ready by the time a batch is done: taking them here saves a turn
  // of Node's event loop (and its epoll_wait) per batch, a measurable share of a small request.
  for (int round = 0; count > 0 && !f->destroyed; round++) {
    for (int i = 0; i < count && !f->destroyed; i++) {
      uint64_t data = ready[i].data.u64;
      if ((data & 0xFu) == KIND_LISTENER) accept_ready(f, (int)(data >> 8));
      else connection_event(f, data, ready[i].events);
    }
    if (round + 1 == ROUNDS_PER_WAKE || f->destroyed) break;
    count = epoll_wait(f->epoll_fd, ready, EVENTS_PER_WAKE, 0);
  }
  leave_javascript(f);
}

static void timer_fired(uv_timer_t *timer) {
  forwarder *f = timer->data;
  f->timer_due = 0;
  uint64_t now = uv_now(timer->loop), next = 0;
  if (f->listeners_paused) resume_listeners(f);
  // Each report calls JavaScript, which may reset or connect any connection, so the expired ones
  // are collected by id first and looked up again one by one: no pointer into the list (or to a
  // connection) outlives a call.
  double expired[EXPIRED_PER_SCAN];
  size_t count = 0;
  for (connection *c = f->connecting; c; c = c->next_connecting) {
    if (c->connect_deadline > now) continue;
    if (count == EXPIRED_PER_SCAN) {
      next = now; // the rest at once, from the next turn
      break;
    }
    expired[count++] = id_of(c);
  }
  for (size_t i = 0; i < count && !f->destroyed; i++) {
    connection *c = lookup(f, expired[i]);
    // Gone meanwhile (reset, its slot perhaps reused under a new id), or connecting anew.
    if (c && c->state == CONNECTING && c->connect_deadline <= now) connect_done(f, c, ETIMEDOUT);
  }
  leave_javascript(f);
  if (f->destroyed) return;
  for (connection *c = f->connecting; c; c = c->next_connecting)
    if (!next || c->connect_deadline < next) next = c->connect_deadline;
  if (f->listeners_paused && (!next || now + 100 < next)) next = now + 100;
  if (next) arm_timer(f, next);
}

// ---- idle timeouts: no timer per connection; a periodic sweep of the table

static uint64_t sweep_interval(const forwarder *f) {
  uint64_t interval = f->idle_timeout_ms / SWEEP_DIVISOR;
  return interval < SWEEP_MIN_MS ? SWEEP_MIN_MS : interval > SWEEP_MAX_MS ? SWEEP_MAX_MS : interval;
}

static void sweep_fired(uv_timer_t *timer);

static void start_sweeping(forwarder *f) {
  if (f->sweeping || f->destroyed || f->idle_timeout_ms == 0) return;
  f->sweeping = true;
  uint64_t interval = sweep_interval(f);
  uv_timer_start(&f->sweep, sweep_fired, interval, interval);
}

static void stop_sweeping(forwarder *f) {
  if (!f->sweeping) return;
  f->sweeping = false;
  uv_timer_stop(&f->sweep);
}

// Connections that moved no byte either way for the idle timeout are reset on both sides: a
// silent peer may be gone, and a reset says so to the other (a clean end could pass for a
// complete answer). Slots are walked by index and read again after each call to JavaScript.
static void sweep_fired(uv_timer_t *timer) {
  forwarder *f = timer->data;
  uint64_t now = uv_now(timer->loop);
  bool forwarding = false;
  for (uint32_t slot = 0; slot < f->slot_count && !f->destroyed && f->idle_timeout_ms; slot++) {
    connection *c = f->slots[slot];
    if (c->state != FORWARDING) continue;
    if (now - c->last_active < f->idle_timeout_ms) {
      forwarding = true;
      continue;
    }
    finish(f, c, OUTCOME_IDLE_TIMEOUT);
  }
  leave_javascript(f);
  if (!forwarding && !f->destroyed) stop_sweeping(f);
}

// ---- the JavaScript interface (see index.ts for its types and the rules of its use)

static forwarder *forwarder_of(napi_env env, napi_callback_info info, size_t *argc, napi_value *argv) {
  void *data;
  napi_get_cb_info(env, info, argc, argv, NULL, &data);
  forwarder *f = data; // alive while this function is: see 'Lifetime' at the top
  if (f->destroyed) {
    napi_throw_error(env, "ERR_FORWARDER_DESTROYED", "the forwarder was destroyed");
    return NULL;
  }
  return f;
}

// The error's `code` is the errno's name (EADDRINUSE, ...), as Node's own socket errors have it,
// so the sidecar can say which listener failed and which flag moves it.
static napi_value throw_errno_text(napi_env env, const char *what, int error) {
  char message[256];
  snprintf(message, sizeof message, "%s: %s", what, strerror(error));
  napi_throw_error(env, strerrorname_np(error), message);
  return NULL;
}

static napi_value throw_type(napi_env env, const char *message) {
  napi_throw_type_error(env, NULL, message);
  return NULL;
}

// Numbers from JavaScript are checked before any cast: a cast of NaN, an infinity or a value out
// of the target's range is undefined behaviour in C, and a port of 70000 must not become 4464.
static bool argument_integer(napi_env env, napi_value value, double min, double max, double *out) {
  double number;
  if (napi_get_value_double(env, value, &number) != napi_ok || !(number >= min && number <= max)) return false;
  if ((double)(int64_t)number != number) return false; // in range, so the cast is defined
  *out = number;
  return true;
}

// A finite, non-negative number of milliseconds; longer than MAX_TIMEOUT_MS is capped there.
static bool argument_milliseconds(napi_env env, napi_value value, uint64_t *out) {
  double number;
  if (napi_get_value_double(env, value, &number) != napi_ok || !isfinite(number) || number < 0) return false;
  *out = (uint64_t)(number < MAX_TIMEOUT_MS ? number : MAX_TIMEOUT_MS);
  return true;
}

// A whole string that fits `out` (an address never needs more): a longer one is refused, not cut.
static bool argument_text(napi_env env, napi_value value, char *out, size_t size) {
  size_t length;
  if (napi_get_value_string_latin1(env, value, NULL, 0, &length) != napi_ok || length >= size) return false;
  return napi_get_value_string_latin1(env, value, out, size, &length) == napi_ok;
}

static bool parse_address(const char *text, uint16_t port, struct sockaddr_storage *out, socklen_t *length) {
  memset(out, 0, sizeof *out);
  struct sockaddr_in *a4 = (struct sockaddr_in *)out;
  struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)out;
  if (inet_pton(AF_INET, text, &a4->sin_addr) == 1) {
    a4->sin_family = AF_INET;
    a4->sin_port = htons(port);
    *length = sizeof *a4;
    return true;
  }
  if (inet_pton(AF_INET6, text, &a6->sin6_addr) == 1) {
    a6->sin6_family = AF_INET6;
    a6->sin6_port = htons(port);
    *length = sizeof *a6;
    return true;
  }
  return false;
}

static void set_keepalive(int fd) {
  int on = 1, idle = KEEPALIVE_IDLE_S, interval = KEEPALIVE_INTERVAL_S, probes = KEEPALIVE_PROBES;
  setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &on, sizeof on);
  setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof idle);
  setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &interval, sizeof interval);
  setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &probes, sizeof probes);
}

static int open_listener(const char *host, uint16_t port, int *out_fd, uint16_t *bound_port) {
  struct sockaddr_storage address;
  socklen_t length;
  if (!parse_address(host, port, &address, &length)) return EINVAL;
  int fd = socket(address.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return errno;
  int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (address.ss_family == AF_INET6) setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
  // Accepted sockets inherit keepalive from the listener: no system calls per connection.
  set_keepalive(fd);
  if (bind(fd, (struct sockaddr *)&address, length) != 0 || listen(fd, 4096) != 0) {
    int error = errno;
    close(fd);
    return error;
  }
  length = sizeof address;
  getsockname(fd, (struct sockaddr *)&address, &length);
  *bound_port = port_of(&address);
  *out_fd = fd;
  return 0;
}

// 0, or the errno of a failed registration (the listener is then not added).
static int add_listener(forwarder *f, int fd, int family, uint16_t port, int tag, bool redirected) {
  if (f->listener_count == MAX_LISTENERS) return EMFILE;
  int index = f->listener_count++;
  f->listeners[index] = (listener){.fd = fd, .family = family, .tag = tag, .port = port, .redirected = redirected};
  int error = watch_listener(f, index, EPOLLIN, EPOLL_CTL_ADD);
  if (error) f->listeners[--f->listener_count].fd = -1;
  return error;
}

// listen(tag, host, port, redirected = true) -> port. '::' listens on 0.0.0.0 and [::] with two sockets (IPv6 only
// on the second), so each accepted connection needs one getsockopt for its original destination;
// a host without IPv6 gets the IPv4 one alone.
static napi_value js_listen(napi_env env, napi_callback_info info) {
  size_t argc = 4;
  napi_value argv[4];
  forwarder *f = forwarder_of(env, info, &argc, argv);
  if (!f) return NULL;
  double tag, port;
  bool redirected = true;
  napi_valuetype redirected_type = napi_undefined;
  if (argc >= 4) napi_typeof(env, argv[3], &redirected_type);
  char host[INET6_ADDRSTRLEN + 1];
  if (argc < 3 || !argument_integer(env, argv[0], INT32_MIN, INT32_MAX, &tag) || !argument_text(env, argv[1], host, sizeof host) ||
      !argument_integer(env, argv[2], 0, 65535, &port) || (redirected_type != napi_undefined && redirected_type != napi_boolean))
    return throw_type(env, "listen(tag, host, port, redirected?): expected an integer tag, an IP address, a port (an integer, 0-65535) and a boolean");
  if (argc >= 4 && redirected_type == napi_boolean) napi_get_value_bool(env, argv[3], &redirected);
  if (f->listener_count + 2 > MAX_LISTENERS) {
    napi_throw_error(env, NULL, "listen: too many listeners on one forwarder");
    return NULL;
  }
  struct sockaddr_storage parsed;
  socklen_t parsed_length;
  if (!parse_address(host, 0, &parsed, &parsed_length)) {
    char message[128];
    snprintf(message, sizeof message, "listen: '%s' is not an IP address", host);
    return throw_type(env, message);
  }
  bool both = strcmp(host, "::") == 0;
  int fd;
  uint16_t bound;
  int error = open_listener(both ? "0.0.0.0" : host, (uint16_t)port, &fd, &bound);
  if (!error) {
    error = add_listener(f, fd, strchr(both ? "0.0.0.0" : host, ':') ? AF_INET6 : AF_INET, bound, (int)tag, redirected);
    if (error) close(fd);
  }
  if (error) {
    char what[128];
    snprintf(what, sizeof what, "listen on %s port %d", host, (int)port);
    return throw_errno_text(env, what, error);
  }
  if (both) {
    int fd6;
    uint16_t bound6;
    error = open_listener("::", bound, &fd6, &bound6);
    if (error == 0) {
      error = add_listener(f, fd6, AF_INET6, bound6, (int)tag, redirected);
      if (error) close(fd6);
    } else if (error == EAFNOSUPPORT || error == EADDRNOTAVAIL) {
      error = 0;
    }
    if (error) {
      close(fd); // the IPv4 half: all or nothing
      f->listeners[--f->listener_count].fd = -1;
      char what[128];
      snprintf(what, sizeof what, "listen on [::] port %d", (int)bound);
      return throw_errno_text(env, what, error);
    }
  }
  return number(env, bound);
}

static napi_value js_stop_listening(napi_env env, napi_callback_info info) {
  size_t argc = 0;
  forwarder *f = forwarder_of(env, info, &argc, NULL);
  if (!f) return NULL;
  for (int i = 0; i < f->listener_count; i++) {
    if (f->listeners[i].fd < 0) continue;
    close(f->listeners[i].fd);
    f->listeners[i].fd = -1;
  }
  return NULL;
}

// An id from accept(): a TypeError for anything that cannot be one, ERR_FORWARDER_NO_CONNECTION
// for one that is no longer open.
static connection *connection_argument(napi_env env, forwarder *f, napi_value value, const char *what) {
  double id;
  if (!argument_integer(env, value, 0, MAX_ID, &id)) {
    char message[160];
    snprintf(message, sizeof message, "%s: the id must be a connection id from accept (a non-negative integer)", what);
    throw_type(env, message);
    return NULL;
  }
  connection *c = lookup(f, id);
  if (!c) {
    char message[160];
    snprintf(message, sizeof message, "%s: no such connection (closed, or handed over)", what);
    napi_throw_error(env, "ERR_FORWARDER_NO_CONNECTION", message);
  }
  return c;
}

// connect(id, address, port, timeoutMs, source?) -> 0, or the errno of a failure known at once
// (the connection is then still the caller's to retry or reset). Otherwise onConnect reports.
static napi_value js_connect(napi_env env, napi_callback_info info) {
  size_t argc = 5;
  napi_value argv[5];
  forwarder *f = forwarder_of(env, info, &argc, argv);
  if (!f) return NULL;
  if (argc < 4) return throw_type(env, "connect(id, address, port, timeoutMs, source?)");
  connection *c = connection_argument(env, f, argv[0], "connect");
  if (!c) return NULL;
  if (c->state != ACCEPTED) {
    napi_throw_error(env, NULL, "connect: the connection is already connecting or connected");
    return NULL;
  }
  char address[INET6_ADDRSTRLEN + 1], source[INET6_ADDRSTRLEN + 1] = "";
  double port;
  uint64_t timeout_ms;
  napi_valuetype source_type = napi_undefined;
  if (argc >= 5) napi_typeof(env, argv[4], &source_type);
  struct sockaddr_storage target, from;
  socklen_t target_length, from_length = 0;
  if (!argument_text(env, argv[1], address, sizeof address) || !argument_integer(env, argv[2], 1, 65535, &port) ||
      !argument_milliseconds(env, argv[3], &timeout_ms) || !parse_address(address, (uint16_t)port, &target, &target_length) ||
      (source_type != napi_undefined &&
       (source_type != napi_string || !argument_text(env, argv[4], source, sizeof source) || !parse_address(source, 0, &from, &from_length))))
    return throw_type(env, "connect(id, address, port, timeoutMs, source?): expected IP addresses, a port (an integer, 1-65535) and a "
                           "timeout (milliseconds, finite, 0 or more)");
  int fd = socket(target.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return number(env, errno);
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  set_keepalive(fd);
  if (from_length) {
    // Choose the source address now but the port at connect(), with the destination known:
    // binding first would take a port out of the ephemeral range per connection.
    setsockopt(fd, SOL_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one);
    if (bind(fd, (struct sockaddr *)&from, from_length) != 0) {
      int error = errno;
      close(fd);
      return number(env, error);
    }
  }
  if (connect(fd, (struct sockaddr *)&target, target_length) != 0 && errno != EINPROGRESS) {
    int error = errno;
    close(fd);
    return number(env, error);
  }
  c->fd[UPSTREAM] = fd;
  c->registered[UPSTREAM] = false;
  int error = set_interest(f, c, UPSTREAM, EPOLLOUT);
  if (error) {
    close(fd);
    c->fd[UPSTREAM] = -1;
    return number(env, error);
  }
  c->state = CONNECTING;
  c->connect_deadline = uv_now(f->poll.loop) + timeout_ms;
  c->next_connecting = f->connecting;
  c->previous_connecting = NULL;
  if (f->connecting) f->connecting->previous_connecting = c;
  f->connecting = c;
  arm_timer(f, c->connect_deadline);
  return number(env, 0);
}

// release(id) -> fd: the accepted socket becomes the caller's (for net.Socket({ fd })).
static napi_value js_release(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  forwarder *f = forwarder_of(env, info, &argc, argv);
  if (!f) return NULL;
  if (argc < 1) return throw_type(env, "release(id)");
  connection *c = connection_argument(env, f, argv[0], "release");
  if (!c) return NULL;
  if (c->state != ACCEPTED) {
    napi_throw_error(env, NULL, "release: only a connection not yet connecting can be handed over");
    return NULL;
  }
  int fd = c->fd[CLIENT];
  c->fd[CLIENT] = -1;
  release_slot(f, c);
  return number(env, fd);
}

// reset(id): refuses an accepted connection (RST), during or after its connect attempts.
static napi_value js_reset(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  forwarder *f = forwarder_of(env, info, &argc, argv);
  if (!f) return NULL;
  if (argc < 1) return throw_type(env, "reset(id)");
  connection *c = connection_argument(env, f, argv[0], "reset");
  if (!c) return NULL;
  if (c->state == FORWARDING) {
    napi_throw_error(env, NULL, "reset: the connection is forwarding; it ends when either side closes");
    return NULL;
  }
  if (c->state == CONNECTING) {
    unlist_connecting(f, c);
    close(c->fd[UPSTREAM]);
    c->fd[UPSTREAM] = -1;
  }
  abortive_close(c->fd[CLIENT]);
  c->fd[CLIENT] = -1;
  release_slot(f, c);
  return NULL;
}

// setIdleTimeout(ms): forwarding connections that move no byte either way for this long are
// reset on both sides; 0 turns it off. Applies to open connections too.
static napi_value js_set_idle_timeout(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  forwarder *f = forwarder_of(env, info, &argc, argv);
  if (!f) return NULL;
  uint64_t timeout_ms;
  if (argc < 1 || !argument_milliseconds(env, argv[0], &timeout_ms))
    return throw_type(env, "setIdleTimeout(ms): expected milliseconds (finite, 0 or more; 0: none)");
  if (timeout_ms == f->idle_timeout_ms) return NULL;
  f->idle_timeout_ms = timeout_ms;
  stop_sweeping(f);
  for (uint32_t slot = 0; slot < f->slot_count; slot++) {
    if (f->slots[slot]->state != FORWARDING) continue;
    start_sweeping(f); // with the new interval
    break;
  }
  return NULL;
}

// takeBytes() -> [id, fromClient, fromUpstream, ...]: bytes forwarded since the last call, for
// connections still open (onClose reports the rest), so long connections show in metrics.
static napi_value js_take_bytes(napi_env env, napi_callback_info info) {
  size_t argc = 0;
  forwarder *f = forwarder_of(env, info, &argc, NULL);
  if (!f) return NULL;
  napi_value result;
  napi_create_array(env, &result);
  uint32_t index = 0;
  for (uint32_t slot = 0; slot < f->slot_count; slot++) {
    connection *c = f->slots[slot];
    if (c->state != FORWARDING || (c->bytes[0] == c->reported[0] && c->bytes[1] == c->reported[1])) continue;
    napi_set_element(env, result, index++, number(env, id_of(c)));
    napi_set_element(env, result, index++, number(env, (double)(c->bytes[0] - c->reported[0])));
    napi_set_element(env, result, index++, number(env, (double)(c->bytes[1] - c->reported[1])));
    c->reported[0] = c->bytes[0];
    c->reported[1] = c->bytes[1];
  }
  return result;
}

static napi_value js_open_connections(napi_env env, napi_callback_info info) {
  size_t argc = 0;
  forwarder *f = forwarder_of(env, info, &argc, NULL);
  if (!f) return NULL;
  return number(env, f->live);
}

static void unreference(forwarder *f) {
  if (--f->references == 0) free(f);
}

// A JavaScript function of this forwarder was collected.
static void method_finalized(napi_env env, void *data, void *hint) {
  (void)env;
  (void)hint;
  unreference(data);
}

static void handle_closed(uv_handle_t *handle) {
  forwarder *f = handle->data;
  if (--f->open_handles > 0) return;
  for (uint32_t slot = 0; slot < f->slot_count; slot++) free(f->slots[slot]);
  free(f->slots);
  free(f->buffer);
  f->slots = NULL;
  f->slot_count = 0;
  f->buffer = NULL;
  unreference(f); // the event loop's
}

// The callbacks and the async context, once no scope opened with them is open.
static void release_javascript(forwarder *f) {
  if (f->javascript_released) return;
  f->javascript_released = true;
  napi_delete_reference(f->env, f->on_accept);
  napi_delete_reference(f->env, f->on_connect);
  napi_delete_reference(f->env, f->on_close);
  napi_delete_reference(f->env, f->resource);
  napi_async_destroy(f->env, f->async_context);
}

// destroy(): closes the listeners and every connection (without callbacks) and frees it all.
static napi_value js_destroy(napi_env env, napi_callback_info info) {
  size_t argc = 0;
  void *data;
  napi_get_cb_info(env, info, &argc, NULL, NULL, &data);
  forwarder *f = data;
  if (f->destroyed) return NULL;
  for (int i = 0; i < f->listener_count; i++) {
    if (f->listeners[i].fd >= 0) close(f->listeners[i].fd);
    f->listeners[i].fd = -1;
  }
  for (uint32_t slot = 0; slot < f->slot_count; slot++) {
    connection *c = f->slots[slot];
    if (c->state == FREE) continue;
    if (c->fd[CLIENT] >= 0) abortive_close(c->fd[CLIENT]);
    if (c->fd[UPSTREAM] >= 0) abortive_close(c->fd[UPSTREAM]);
    for (int side = 0; side < 2; side++) free(c->queued[side].data);
    c->state = FREE;
  }
  f->live = 0;
  f->connecting = NULL;
  f->destroyed = true;
  uv_close((uv_handle_t *)&f->poll, handle_closed); // stops watching before the epoll fd closes
  uv_close((uv_handle_t *)&f->timer, handle_closed);
  uv_close((uv_handle_t *)&f->sweep, handle_closed);
  close(f->epoll_fd);
  f->epoll_fd = -1;
  if (!f->in_javascript) release_javascript(f);
  return NULL;
}

// createForwarder(onAccept, onConnect, onClose) -> the forwarder's methods.
napi_value create_forwarder(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value argv[3];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  for (size_t i = 0; i < 3; i++) {
    napi_valuetype type = napi_undefined;
    if (i < argc) napi_typeof(env, argv[i], &type);
    if (type != napi_function) return throw_type(env, "createForwarder(onAccept, onConnect, onClose): three functions");
  }
  uv_loop_t *loop;
  if (napi_get_uv_event_loop(env, &loop) != napi_ok) {
    napi_throw_error(env, NULL, "createForwarder: no event loop");
    return NULL;
  }
  forwarder *f = calloc(1, sizeof *f);
  char *buffer = malloc(COPY_BUFFER_SIZE);
  int epoll_fd = epoll_create1(EPOLL_CLOEXEC);
  if (!f || !buffer || epoll_fd < 0) {
    int error = epoll_fd < 0 ? errno : ENOMEM;
    free(f);
    free(buffer);
    if (epoll_fd >= 0) close(epoll_fd);
    return throw_errno_text(env, "createForwarder", error);
  }
  f->env = env;
  f->buffer = buffer;
  f->epoll_fd = epoll_fd;
  f->free_head = NO_SLOT;
  int status = uv_poll_init(loop, &f->poll, epoll_fd);
  if (status != 0) {
    close(epoll_fd);
    free(buffer);
    free(f);
    return throw_errno_text(env, "createForwarder: watching the epoll set", -status);
  }
  uv_timer_init(loop, &f->timer);
  uv_timer_init(loop, &f->sweep);
  // The sweep alone never keeps the process alive (the poll handle does while the forwarder lives).
  uv_unref((uv_handle_t *)&f->sweep);
  f->poll.data = f->timer.data = f->sweep.data = f;
  f->open_handles = 3;
  f->references = 1; // the event loop's, until its handles have closed
  uv_poll_start(&f->poll, UV_READABLE, poll_ready);
  napi_create_reference(env, argv[0], 1, &f->on_accept);
  napi_create_reference(env, argv[1], 1, &f->on_connect);
  napi_create_reference(env, argv[2], 1, &f->on_close);
  napi_value resource, name;
  napi_create_object(env, &resource);
  napi_create_reference(env, resource, 1, &f->resource);
  napi_create_string_utf8(env, "flb:forwarder", NAPI_AUTO_LENGTH, &name);
  napi_async_init(env, resource, name, &f->async_context);

  napi_value methods;
  napi_create_object(env, &methods);
  const struct {
    const char *name;
    napi_callback callback;
  } table[METHOD_COUNT] = {{"listen", js_listen},   {"stopListening", js_stop_listening}, {"connect", js_connect},
                           {"release", js_release}, {"reset", js_reset},                  {"setIdleTimeout", js_set_idle_timeout},
                           {"takeBytes", js_take_bytes}, {"openConnections", js_open_connections}, {"destroy", js_destroy}};
  for (size_t i = 0; i < METHOD_COUNT; i++) {
    napi_value fn;
    napi_create_function(env, table[i].name, NAPI_AUTO_LENGTH, table[i].callback, f, &fn);
    napi_set_named_property(env, methods, table[i].name, fn);
    // Each function holds `f` until it is collected (without a finalizer, for ever: a leak, not a use after free).
    f->references++;
    napi_add_finalizer(env, fn, f, method_finalized, NULL, NULL);
  }
  return methods;
}
