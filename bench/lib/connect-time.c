// New connections one at a time, for bench/ebpf.ts: how long connect() itself takes (the handshake, and
// whatever intercepts it: NAT and conntrack under iptables REDIRECT, the connect4 and sockops
// programs under eBPF) apart from the whole connection (connect, a 64-byte ping, the answer, the
// server's close, close), which adds what the listener behind the redirect does.
//   connect-time HOST PORT SECONDS [WARMUP [TIMEOUT_MS]]
// Prints one JSON line: connections, rate (per second), connect and cycle p50/p99 in us, and the
// connections that failed, by kind, with the first failure's reason.
//
// No connection can hold the run: connect(), the write and each read give up after TIMEOUT_MS
// (default 1000; SO_SNDTIMEO / SO_RCVTIMEO, so connect() stays the one blocking call it is
// measured as), the connection is counted as failed and the next one starts. A SYN the kernel
// sends again (after 1 s) is one such failure rather than a 1 s sample.
//
// The client closes with SO_LINGER 0 (an RST instead of a FIN) once it has the server's end of
// stream. The server closes first, so the TIME_WAIT socket would be the server's (or, under
// REDIRECT, the listener's on 127.0.0.1:15001, which NAT hides from the client's choice of source
// port): one source address dialling one destination tens of thousands of times a second reuses
// each source port within a second or two, and a SYN that meets such a TIME_WAIT socket is
// accepted, refused by PAWS or answered with a stale ACK depending on timestamps and on what ran
// before. With the RST no TIME_WAIT socket is left on either side, so every column and run order
// measures the same handshake.
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

enum failure { CONNECT_TIMEOUT, CONNECT_ERROR, ANSWER_TIMEOUT, ANSWER_ERROR, SHORT_ANSWER, FAILURE_KINDS };
static const char *const failure_names[FAILURE_KINDS] = {"connectTimeouts", "connectErrors", "answerTimeouts", "answerErrors", "shortAnswers"};

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static int by_value(const void *a, const void *b) {
  float x = *(const float *)a, y = *(const float *)b;
  return (x > y) - (x < y);
}

static double percentile(float *xs, size_t n, double p) {
  if (n == 0) return 0;
  qsort(xs, n, sizeof *xs, by_value);
  return xs[(size_t)(p * (double)(n - 1))];
}

// A positive number from the command line, or exit with a message naming it.
static double positive(const char *what, const char *text) {
  char *end;
  double x = strtod(text, &end);
  if (end == text || *end != '\0' || !(x > 0)) {
    fprintf(stderr, "connect-time: %s must be a positive number, not '%s'\n", what, text);
    exit(2);
  }
  return x;
}

// One connection: connect, ping, the answer up to the server's end of stream. Returns -1 when it
// succeeded, else the kind of failure (errno holds its cause); *dialled and *connected are when
// connect() was called and when it returned.
static int one_connection(const struct sockaddr_in *target, const struct timeval *timeout, double *dialled, double *connected) {
  static char ping[64], buf[4096];
  *dialled = *connected = now();
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return CONNECT_ERROR;
  int one = 1;
  struct linger reset = {.l_onoff = 1, .l_linger = 0};
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, timeout, sizeof *timeout);
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, timeout, sizeof *timeout);
  setsockopt(fd, SOL_SOCKET, SO_LINGER, &reset, sizeof reset);
  int kind = -1;
  *dialled = now();
  if (connect(fd, (const struct sockaddr *)target, sizeof *target) != 0) {
    // A connect() that ran out of SO_SNDTIMEO says EINPROGRESS.
    kind = errno == EINPROGRESS ? CONNECT_TIMEOUT : CONNECT_ERROR;
    if (kind == CONNECT_TIMEOUT) errno = ETIMEDOUT;
  }
  *connected = now();
  if (kind < 0 && write(fd, ping, sizeof ping) != (ssize_t)sizeof ping) kind = errno == EAGAIN ? ANSWER_TIMEOUT : ANSWER_ERROR;
  size_t got = 0;
  for (ssize_t r; kind < 0 && (r = read(fd, buf, sizeof buf)) != 0;) {
    if (r > 0) got += (size_t)r;
    else if (errno != EINTR) kind = errno == EAGAIN ? ANSWER_TIMEOUT : ANSWER_ERROR;
  }
  if (kind < 0 && got < sizeof ping) {
    kind = SHORT_ANSWER;
    errno = EPROTO;
  }
  int saved = errno;
  close(fd);
  errno = saved;
  return kind;
}

int main(int argc, char **argv) {
  if (argc < 4 || argc > 6) {
    fprintf(stderr, "usage: connect-time HOST PORT SECONDS [WARMUP [TIMEOUT_MS]]\n");
    return 2;
  }
  struct sockaddr_in target = {.sin_family = AF_INET};
  if (inet_pton(AF_INET, argv[1], &target.sin_addr) != 1) {
    fprintf(stderr, "connect-time: %s is not an IPv4 address\n", argv[1]);
    return 2;
  }
  double port = positive("PORT", argv[2]);
  if (port > 65535 || port != (double)(int)port) {
    fprintf(stderr, "connect-time: PORT must be a whole number from 1 to 65535, not '%s'\n", argv[2]);
    return 2;
  }
  target.sin_port = htons((uint16_t)port);
  double seconds = positive("SECONDS", argv[3]), warmup = argc > 4 ? atof(argv[4]) : 1;
  double timeout_ms = argc > 5 ? positive("TIMEOUT_MS", argv[5]) : 1000;
  struct timeval timeout = {.tv_sec = (time_t)(timeout_ms / 1000), .tv_usec = (suseconds_t)((long)timeout_ms % 1000 * 1000)};
  if (timeout.tv_sec == 0 && timeout.tv_usec == 0) timeout.tv_usec = 1000;

  size_t cap = 1 << 16, n = 0;
  float *connect_us = malloc(cap * sizeof *connect_us), *cycle_us = malloc(cap * sizeof *cycle_us);
  if (!connect_us || !cycle_us) {
    perror("connect-time: malloc");
    return 1;
  }
  unsigned long long failures[FAILURE_KINDS] = {0}, failed = 0;
  char first_failure[160] = "";
  double from = now() + warmup, until = from + seconds;
  for (double t0 = now(); t0 < until; t0 = now()) {
    double dialled, t1;
    int kind = one_connection(&target, &timeout, &dialled, &t1);
    double t2 = now();
    if (t0 < from) continue;
    if (kind >= 0) {
      if (failed++ == 0) snprintf(first_failure, sizeof first_failure, "%s: %s", failure_names[kind], strerror(errno));
      failures[kind]++;
      continue;
    }
    if (n == cap) {
      cap *= 2;
      float *more_connect = realloc(connect_us, cap * sizeof *connect_us), *more_cycle = more_connect ? realloc(cycle_us, cap * sizeof *cycle_us) : NULL;
      if (!more_connect || !more_cycle) {
        perror("connect-time: realloc");
        return 1;
      }
      connect_us = more_connect;
      cycle_us = more_cycle;
    }
    connect_us[n] = (float)((t1 - dialled) * 1e6);
    cycle_us[n] = (float)((t2 - t0) * 1e6);
    n++;
  }
  double elapsed = now() - from;
  printf("{\"connections\":%zu,\"rate\":%.1f,\"connectP50Us\":%.1f,\"connectP99Us\":%.1f,", n, (double)n / elapsed, percentile(connect_us, n, 0.5),
         percentile(connect_us, n, 0.99));
  printf("\"cycleP50Us\":%.1f,\"cycleP99Us\":%.1f,\"errors\":%llu,\"timeoutMs\":%g", percentile(cycle_us, n, 0.5), percentile(cycle_us, n, 0.99), failed,
         timeout_ms);
  for (int k = 0; k < FAILURE_KINDS; k++) printf(",\"%s\":%llu", failure_names[k], failures[k]);
  // strerror's text holds no quote or backslash, so it needs no escaping.
  printf(",\"firstFailure\":\"%s\"}\n", first_failure);
  free(connect_us);
  free(cycle_us);
  return 0;
}
