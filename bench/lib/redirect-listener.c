// The minimal "sidecar" of bench/ebpf.ts: interception alone, without a proxy's own work. One
// epoll thread on 0.0.0.0:PORT accepts a redirected connection, asks it SO_ORIGINAL_DST (answered
// by conntrack under iptables REDIRECT, by the cgroup/getsockopt program under eBPF: the same
// call either way), dials that destination and relays bytes both ways (read/write through a
// 64 KiB buffer per direction), passing each end-of-stream on with shutdown(). It must run as the
// proxy UID, or its own dial would be redirected back to it.
//   redirect-listener PORT
// Prints "ready" once listening; runs until killed.
#define _GNU_SOURCE
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

// From <linux/netfilter_ipv4.h>, which cannot be included beside <netinet/in.h>.
#ifndef SO_ORIGINAL_DST
#define SO_ORIGINAL_DST 80
#endif

struct half {
  int from, to;
  size_t len, off;
  int eof;
  char buf[65536];
};

struct pair {
  int client, upstream;
  int connected, closed;
  struct half up, down;
  struct pair *next_closed;
};

static int ep;
// Pairs closed while handling a batch of events are freed after it: a later event of the same
// batch may still point at them.
static struct pair *closed_pairs;

static void die(const char *what) {
  perror(what);
  exit(1);
}

static void close_pair(struct pair *p) {
  if (p->closed) return;
  p->closed = 1;
  close(p->client);
  close(p->upstream);
  p->next_closed = closed_pairs;
  closed_pairs = p;
}

// Moves what can move from h->from to h->to without blocking; 0 when the pair must be closed.
static int pump(struct half *h) {
  for (;;) {
    while (h->len > 0) {
      ssize_t w = write(h->to, h->buf + h->off, h->len);
      if (w < 0 && errno == EAGAIN) return 1;
      if (w < 0) return 0;
      h->off += (size_t)w;
      h->len -= (size_t)w;
    }
    if (h->eof) return 1;
    ssize_t r = read(h->from, h->buf, sizeof h->buf);
    if (r < 0 && errno == EAGAIN) return 1;
    if (r < 0) return 0;
    if (r == 0) {
      h->eof = 1;
      shutdown(h->to, SHUT_WR);
      return 1;
    }
    h->len = (size_t)r;
    h->off = 0;
  }
}

static void serve(struct pair *p) {
  if (p->closed) return;
  if (!p->connected) {
    int err = 0;
    socklen_t len = sizeof err;
    getsockopt(p->upstream, SOL_SOCKET, SO_ERROR, &err, &len);
    if (err) return close_pair(p);
    // Still connecting: a write would fail with EAGAIN and a read find nothing yet.
    struct tcp_info info;
    len = sizeof info;
    if (getsockopt(p->upstream, IPPROTO_TCP, TCP_INFO, &info, &len) == 0 && info.tcpi_state == TCP_SYN_SENT) return;
    p->connected = 1;
  }
  if (!pump(&p->up) || !pump(&p->down)) return close_pair(p);
  if (p->up.eof && p->down.eof && p->up.len == 0 && p->down.len == 0) close_pair(p);
}

static void accept_all(int listener) {
  for (;;) {
    int client = accept4(listener, NULL, NULL, SOCK_NONBLOCK);
    if (client < 0) {
      if (errno != EAGAIN && errno != EMFILE && errno != ENFILE && errno != ECONNABORTED) perror("accept4");
      return;
    }
    struct sockaddr_in original;
    socklen_t len = sizeof original;
    if (getsockopt(client, SOL_IP, SO_ORIGINAL_DST, &original, &len) != 0) {
      perror("getsockopt SO_ORIGINAL_DST");
      close(client);
      continue;
    }
    int upstream = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    if (upstream < 0) {
      perror("socket");
      close(client);
      continue;
    }
    int one = 1;
    setsockopt(client, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    setsockopt(upstream, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (connect(upstream, (struct sockaddr *)&original, sizeof original) != 0 && errno != EINPROGRESS) {
      close(client);
      close(upstream);
      continue;
    }
    struct pair *p = calloc(1, sizeof *p);
    if (!p) die("calloc");
    p->client = client;
    p->upstream = upstream;
    p->up = (struct half){.from = client, .to = upstream};
    p->down = (struct half){.from = upstream, .to = client};
    struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET, .data.ptr = p};
    if (epoll_ctl(ep, EPOLL_CTL_ADD, client, &ev) != 0 || epoll_ctl(ep, EPOLL_CTL_ADD, upstream, &ev) != 0) {
      perror("epoll_ctl");
      close_pair(p);
    }
  }
}

int main(int argc, char **argv) {
  if (argc != 2) {
    fprintf(stderr, "usage: redirect-listener PORT\n");
    return 2;
  }
  char *end;
  long port = strtol(argv[1], &end, 10);
  if (end == argv[1] || *end != '\0' || port < 1 || port > 65535) {
    fprintf(stderr, "redirect-listener: PORT must be a whole number from 1 to 65535, not '%s'\n", argv[1]);
    return 2;
  }
  // A write to a peer that has gone must fail with EPIPE and close that pair, not end the process.
  signal(SIGPIPE, SIG_IGN);
  int listener = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
  if (listener < 0) die("socket");
  int one = 1;
  setsockopt(listener, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port), .sin_addr.s_addr = htonl(INADDR_ANY)};
  if (bind(listener, (struct sockaddr *)&addr, sizeof addr) != 0) die("bind");
  if (listen(listener, 4096) != 0) die("listen");
  ep = epoll_create1(0);
  if (ep < 0) die("epoll_create1");
  // The listener's own event carries a null pointer; every other one a pair.
  struct epoll_event lev = {.events = EPOLLIN, .data.ptr = NULL};
  if (epoll_ctl(ep, EPOLL_CTL_ADD, listener, &lev) != 0) die("epoll_ctl");
  printf("ready\n");
  fflush(stdout);
  struct epoll_event events[256];
  for (;;) {
    int n = epoll_wait(ep, events, 256, -1);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) die("epoll_wait");
    for (int i = 0; i < n; i++) {
      if (events[i].data.ptr == NULL) accept_all(listener);
      else serve(events[i].data.ptr);
    }
    while (closed_pairs) {
      struct pair *p = closed_pairs;
      closed_pairs = p->next_closed;
      free(p);
    }
  }
}
