// The endpoint server of bench/sidecar.ts: one epoll thread, so that it costs little of the core
// it shares with the load generator (a Node server would need most of that core at the rates
// HAProxy reaches, and then measure itself instead of the proxies).
//   tcp-endpoint ECHO_PORT SOURCE_PORT ONCE_PORT
// ECHO_PORT echoes what it reads (64-byte request/response, latency);
// SOURCE_PORT writes 64 KiB buffers for as long as the peer reads (bulk throughput);
// ONCE_PORT echoes the first read and closes (new connections): the server closes first, as an
// HTTP/1.0 or `Connection: close` server does, so TIME_WAIT lands on the server side and the
// client's connect() does not spend its time searching for a free source port.
// Both listen on every address of the namespace, so one process is every endpoint of the service.
// Prints "ready" once listening; runs until killed.
#define _GNU_SOURCE
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

enum kind { LISTEN_ECHO, LISTEN_SOURCE, LISTEN_ONCE, ECHO, SOURCE, ONCE };

struct conn {
  enum kind kind;
  int fd;
  // Echo bytes the peer was not ready to take; a request/response client never leaves any, but a
  // writer that does not read must not make the server lose bytes.
  size_t pending, sent;
  char buf[65536];
};

static char source_chunk[65536];
static int ep;

static void die(const char *what) {
  perror(what);
  exit(1);
}

static struct conn *add(int fd, enum kind kind, unsigned events) {
  struct conn *c = calloc(1, kind == ECHO || kind == SOURCE || kind == ONCE ? sizeof *c : offsetof(struct conn, buf));
  if (!c) die("calloc");
  c->fd = fd;
  c->kind = kind;
  struct epoll_event ev = {.events = events, .data.ptr = c};
  if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) < 0) die("epoll_ctl");
  return c;
}

static void drop(struct conn *c) {
  close(c->fd);
  free(c);
}

static void listen_on(int port, enum kind kind) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
  int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port), .sin_addr.s_addr = htonl(INADDR_ANY)};
  if (bind(fd, (struct sockaddr *)&a, sizeof a) < 0) die("bind");
  if (listen(fd, 65535) < 0) die("listen");
  add(fd, kind, EPOLLIN);
}

static void set_events(struct conn *c, unsigned events) {
  struct epoll_event ev = {.events = events, .data.ptr = c};
  epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
}

// Returns 0 when the connection was closed.
static int flush(struct conn *c) {
  while (c->sent < c->pending) {
    ssize_t n = write(c->fd, c->buf + c->sent, c->pending - c->sent);
    if (n < 0 && errno == EAGAIN) {
      set_events(c, EPOLLOUT);
      return 1;
    }
    if (n <= 0) {
      drop(c);
      return 0;
    }
    c->sent += (size_t)n;
  }
  c->pending = c->sent = 0;
  return 1;
}

static void on_echo(struct conn *c, unsigned events) {
  if (events & EPOLLOUT) {
    if (!flush(c)) return;
    if (c->pending) return;
    set_events(c, EPOLLIN);
  }
  if (!(events & (EPOLLIN | EPOLLHUP | EPOLLERR)) || c->pending) return;
  ssize_t n = read(c->fd, c->buf, sizeof c->buf);
  if (n < 0 && errno == EAGAIN) return;
  if (n <= 0) {
    drop(c);
    return;
  }
  c->pending = (size_t)n;
  flush(c);
}

static void on_once(struct conn *c) {
  ssize_t n = read(c->fd, c->buf, sizeof c->buf);
  if (n < 0 && errno == EAGAIN) return;
  // A 64-byte answer always fits the empty send buffer of a new connection; a failed write is the
  // client's to notice (it gets no answer).
  if (n > 0) (void)!write(c->fd, c->buf, (size_t)n);
  drop(c);
}

static void on_source(struct conn *c, unsigned events) {
  if (events & (EPOLLIN | EPOLLHUP | EPOLLERR)) {
    char sink[4096];
    ssize_t n = read(c->fd, sink, sizeof sink);
    if (n == 0 || (n < 0 && errno != EAGAIN)) {
      drop(c);
      return;
    }
  }
  if (events & EPOLLOUT) {
    for (;;) {
      ssize_t n = write(c->fd, source_chunk, sizeof source_chunk);
      if (n < 0 && errno == EAGAIN) return;
      if (n <= 0) {
        drop(c);
        return;
      }
    }
  }
}

static void on_listen(struct conn *l) {
  for (;;) {
    int fd = accept4(l->fd, NULL, NULL, SOCK_NONBLOCK);
    if (fd < 0) return;
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (l->kind == LISTEN_ECHO) add(fd, ECHO, EPOLLIN);
    else if (l->kind == LISTEN_ONCE) add(fd, ONCE, EPOLLIN);
    else add(fd, SOURCE, EPOLLIN | EPOLLOUT);
  }
}

int main(int argc, char **argv) {
  if (argc != 4) {
    fprintf(stderr, "usage: tcp-endpoint ECHO_PORT SOURCE_PORT ONCE_PORT\n");
    return 2;
  }
  signal(SIGPIPE, SIG_IGN);
  memset(source_chunk, 'x', sizeof source_chunk);
  ep = epoll_create1(0);
  listen_on(atoi(argv[1]), LISTEN_ECHO);
  listen_on(atoi(argv[2]), LISTEN_SOURCE);
  listen_on(atoi(argv[3]), LISTEN_ONCE);
  printf("ready\n");
  fflush(stdout);
  struct epoll_event events[256];
  for (;;) {
    int n = epoll_wait(ep, events, 256, -1);
    for (int i = 0; i < n; i++) {
      struct conn *c = events[i].data.ptr;
      switch (c->kind) {
        case LISTEN_ECHO:
        case LISTEN_SOURCE:
        case LISTEN_ONCE: on_listen(c); break;
        case ECHO: on_echo(c, events[i].events); break;
        case SOURCE: on_source(c, events[i].events); break;
        case ONCE: on_once(c); break;
      }
    }
  }
}
