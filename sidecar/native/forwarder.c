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
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <linux/netfilter_ipv4.h>
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

enum { CLIENT = 0, UPSTREAM = 1 };
enum state { FREE, ACCEPTED, CONNECTING, FORWARDING };
enum outcome { OUTCOME_CLEAN = 0, OUTCOME_UPSTREAM_FAILED = 1, OUTCOME_CLIENT_FAILED = 2 };

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

static void watch_listener(forwarder *f, int index, uint32_t events, int operation) {
  struct epoll_event event = {.events = events, .data.u64 = ((uint64_t)index << 8) | KIND_LISTENER};
  epoll_ctl(f->epoll_fd, operation, f->listeners[index].fd, &event);
}

static void resume_listeners(forwarder *f) {
  f->listeners_paused = false;
  for (int i = 0; i < f->listener_count; i++) {
    listener *l = &f->listeners[i];
    if (!l->paused || l->fd < 0) continue;
    l->paused = false;
    watch_listener(f, i, EPOLLIN, EPOLL_CTL_MOD);
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

static void set_interest(forwarder *f, connection *c, int side, uint32_t events) {
  if (c->registered[side] && c->interest[side] == events) return;
  if (!c->registered[side] && c->parked[side]) {
    if (events == 0) return;
    c->parked[side] = false;
  }
  struct epoll_event event = {.events = events, .data.u64 = event_data(c, side)};
  epoll_ctl(f->epoll_fd, c->registered[side] ? EPOLL_CTL_MOD : EPOLL_CTL_ADD, c->fd[side], &event);
  c->registered[side] = true;
  c->interest[side] = events;
}

// What each socket waits for while forwarding: reading while its bytes can go on, writing while
// bytes for it wait.
static void update_interest(forwarder *f, connection *c) {
  for (int side = 0; side < 2; side++) {
    uint32_t events = 0;
    if (!c->ended[side] && !c->queued[side].data) events |= EPOLLIN;
    if (c->queued[1 - side].data) events |= EPOLLOUT;
    set_interest(f, c, side, events);
  }
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

static void leave_javascript(forwarder *f) {
  if (!f->in_javascript) return;
  f->in_javascript = false;
  napi_close_callback_scope(f->env, f->turn_callback_scope);
  napi_close_handle_scope(f->env, f->turn_scope);
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
  // would hide it.
  for (int side = 0; side < 2; side++) {
    if (c->fd[side] < 0) continue;
    bool reset = (outcome == OUTCOME_UPSTREAM_FAILED && side == CLIENT) || (outcome == OUTCOME_CLIENT_FAILED && side == UPSTREAM);
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
        update_interest(f, c);
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
      else update_interest(f, c);
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
  if (q->offset < q->length) return;
  free(q->data);
  *q = (queued_bytes){0};
  update_interest(f, c);
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

// The upstream connect ended, one way or the other: forwarding starts, or JavaScript decides
// what next (another endpoint, or a reset).
static void connect_done(forwarder *f, connection *c, int error) {
  unlist_connecting(f, c);
  if (error == 0) {
    c->state = FORWARDING;
    update_interest(f, c);
  } else {
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
  epoll_ctl(f->epoll_fd, EPOLL_CTL_DEL, c->fd[side], NULL);
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
    l->paused = true;
    watch_listener(f, i, 0, EPOLL_CTL_MOD);
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
  for (connection *c = f->connecting, *following; c && !f->destroyed; c = following) {
    following = c->next_connecting;
    if (c->connect_deadline <= now) connect_done(f, c, ETIMEDOUT);
    else if (!next || c->connect_deadline < next) next = c->connect_deadline;
  }
  leave_javascript(f);
  if (next) arm_timer(f, next);
}

// ---- the JavaScript interface (see index.ts for its types and the rules of its use)

static forwarder *forwarder_of(napi_env env, napi_callback_info info, size_t *argc, napi_value *argv) {
  void *data;
  napi_get_cb_info(env, info, argc, argv, NULL, &data);
  forwarder *f = data;
  if (f->destroyed) {
    napi_throw_error(env, "ERR_FORWARDER_DESTROYED", "the forwarder was destroyed");
    return NULL;
  }
  return f;
}

static napi_value throw_errno_text(napi_env env, const char *what, int error) {
  char message[256];
  snprintf(message, sizeof message, "%s: %s", what, strerror(error));
  napi_throw_error(env, NULL, message);
  return NULL;
}

static bool argument_double(napi_env env, napi_value value, double *out) {
  return napi_get_value_double(env, value, out) == napi_ok;
}

static bool argument_text(napi_env env, napi_value value, char *out, size_t size) {
  size_t length;
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

static int open_listener(const char *host, uint16_t port, int *out_fd, uint16_t *bound_port) {
  struct sockaddr_storage address;
  socklen_t length;
  if (!parse_address(host, port, &address, &length)) return EINVAL;
  int fd = socket(address.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return errno;
  int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (address.ss_family == AF_INET6) setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
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

static bool add_listener(forwarder *f, int fd, int family, uint16_t port, int tag, bool redirected) {
  if (f->listener_count == MAX_LISTENERS) return false;
  int index = f->listener_count++;
  f->listeners[index] = (listener){.fd = fd, .family = family, .tag = tag, .port = port, .redirected = redirected};
  watch_listener(f, index, EPOLLIN, EPOLL_CTL_ADD);
  return true;
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
  if (argc >= 4) napi_get_value_bool(env, argv[3], &redirected);
  char host[INET6_ADDRSTRLEN + 1];
  if (argc < 3 || !argument_double(env, argv[0], &tag) || !argument_text(env, argv[1], host, sizeof host) || !argument_double(env, argv[2], &port) || port < 0 || port > 65535) {
    napi_throw_type_error(env, NULL, "listen(tag, host, port): expected a number, an IP address and a port");
    return NULL;
  }
  if (f->listener_count + 2 > MAX_LISTENERS) {
    napi_throw_error(env, NULL, "listen: too many listeners on one forwarder");
    return NULL;
  }
  struct sockaddr_storage parsed;
  socklen_t parsed_length;
  if (!parse_address(host, 0, &parsed, &parsed_length)) {
    char message[128];
    snprintf(message, sizeof message, "listen: '%s' is not an IP address", host);
    napi_throw_type_error(env, NULL, message);
    return NULL;
  }
  bool both = strcmp(host, "::") == 0;
  int fd;
  uint16_t bound;
  int error = open_listener(both ? "0.0.0.0" : host, (uint16_t)port, &fd, &bound);
  if (error) {
    char what[128];
    snprintf(what, sizeof what, "listen on %s port %d", host, (int)port);
    return throw_errno_text(env, what, error);
  }
  add_listener(f, fd, strchr(both ? "0.0.0.0" : host, ':') ? AF_INET6 : AF_INET, bound, (int)tag, redirected);
  if (both) {
    int fd6;
    uint16_t bound6;
    error = open_listener("::", bound, &fd6, &bound6);
    if (error == 0) add_listener(f, fd6, AF_INET6, bound6, (int)tag, redirected);
    else if (error != EAFNOSUPPORT && error != EADDRNOTAVAIL) {
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

static connection *connection_argument(napi_env env, forwarder *f, napi_value value, const char *what) {
  double id;
  connection *c = argument_double(env, value, &id) ? lookup(f, id) : NULL;
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
  connection *c = argc >= 4 ? connection_argument(env, f, argv[0], "connect") : NULL;
  if (!c) {
    if (argc < 4) napi_throw_type_error(env, NULL, "connect(id, address, port, timeoutMs, source?)");
    return NULL;
  }
  if (c->state != ACCEPTED) {
    napi_throw_error(env, NULL, "connect: the connection is already connecting or connected");
    return NULL;
  }
  char address[INET6_ADDRSTRLEN + 1], source[INET6_ADDRSTRLEN + 1] = "";
  double port, timeout_ms;
  napi_valuetype source_type = napi_undefined;
  if (argc >= 5) napi_typeof(env, argv[4], &source_type);
  struct sockaddr_storage target, from;
  socklen_t target_length, from_length = 0;
  if (!argument_text(env, argv[1], address, sizeof address) || !argument_double(env, argv[2], &port) || !argument_double(env, argv[3], &timeout_ms) ||
      !parse_address(address, (uint16_t)port, &target, &target_length) ||
      (source_type == napi_string && (!argument_text(env, argv[4], source, sizeof source) || !parse_address(source, 0, &from, &from_length)))) {
    napi_throw_type_error(env, NULL, "connect(id, address, port, timeoutMs, source?): expected IP addresses and numbers");
    return NULL;
  }
  int fd = socket(target.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return number(env, errno);
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
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
  c->state = CONNECTING;
  set_interest(f, c, UPSTREAM, EPOLLOUT);
  c->connect_deadline = uv_now(f->poll.loop) + (uint64_t)(timeout_ms > 0 ? timeout_ms : 0);
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
  connection *c = argc >= 1 ? connection_argument(env, f, argv[0], "release") : NULL;
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
  connection *c = argc >= 1 ? connection_argument(env, f, argv[0], "reset") : NULL;
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

static void handle_closed(uv_handle_t *handle) {
  forwarder *f = handle->data;
  if (--f->open_handles > 0) return;
  for (uint32_t slot = 0; slot < f->slot_count; slot++) free(f->slots[slot]);
  free(f->slots);
  free(f->buffer);
  free(f);
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
  f->destroyed = true;
  uv_close((uv_handle_t *)&f->poll, handle_closed); // stops watching before the epoll fd closes
  uv_close((uv_handle_t *)&f->timer, handle_closed);
  close(f->epoll_fd);
  f->epoll_fd = -1;
  napi_delete_reference(env, f->on_accept);
  napi_delete_reference(env, f->on_connect);
  napi_delete_reference(env, f->on_close);
  napi_delete_reference(env, f->resource);
  napi_async_destroy(env, f->async_context);
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
    if (type != napi_function) {
      napi_throw_type_error(env, NULL, "createForwarder(onAccept, onConnect, onClose): three functions");
      return NULL;
    }
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
  f->poll.data = f->timer.data = f;
  f->open_handles = 2;
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
  } table[] = {{"listen", js_listen},   {"stopListening", js_stop_listening}, {"connect", js_connect},
               {"release", js_release}, {"reset", js_reset},                  {"takeBytes", js_take_bytes},
               {"openConnections", js_open_connections}, {"destroy", js_destroy}};
  for (size_t i = 0; i < sizeof table / sizeof table[0]; i++) {
    napi_value fn;
    napi_create_function(env, table[i].name, NAPI_AUTO_LENGTH, table[i].callback, f, &fn);
    napi_set_named_property(env, methods, table[i].name, fn);
  }
  return methods;
}
