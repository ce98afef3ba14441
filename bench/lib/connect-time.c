// New connections one at a time, for bench/ebpf.ts: how long connect() takes (the handshake, and
// whatever intercepts it: NAT and conntrack under iptables REDIRECT, the connect4 and sockops
// programs under eBPF) apart from the whole connection (connect, a 64-byte ping, the answer, the
// server's close, close), which adds what the listener behind the redirect does.
//   connect-time HOST PORT SECONDS [WARMUP]
// Prints one JSON line: connections, rate (per second), connect and cycle p50/p99 in us, errors.
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec + t.tv_nsec / 1e9;
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

int main(int argc, char **argv) {
  if (argc < 4) {
    fprintf(stderr, "usage: connect-time HOST PORT SECONDS [WARMUP]\n");
    return 2;
  }
  struct sockaddr_in target = {.sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(argv[2]))};
  if (inet_pton(AF_INET, argv[1], &target.sin_addr) != 1) {
    fprintf(stderr, "connect-time: %s is not an IPv4 address\n", argv[1]);
    return 2;
  }
  double seconds = atof(argv[3]), warmup = argc > 4 ? atof(argv[4]) : 1;
  size_t cap = 1 << 16, n = 0;
  float *connect_us = malloc(cap * sizeof *connect_us), *cycle_us = malloc(cap * sizeof *cycle_us);
  unsigned long long errors = 0;
  char ping[64] = {0}, buf[4096];
  double from = now() + warmup, until = from + seconds;
  for (double t0 = now(); t0 < until; t0 = now()) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    int ok = connect(fd, (struct sockaddr *)&target, sizeof target) == 0;
    double t1 = now();
    ok = ok && write(fd, ping, sizeof ping) == (ssize_t)sizeof ping;
    // The answer, then the server's end of stream.
    size_t got = 0;
    for (ssize_t r; ok && (r = read(fd, buf, sizeof buf)) != 0;) {
      if (r < 0) ok = 0;
      else got += (size_t)r;
    }
    ok = ok && got >= sizeof ping;
    close(fd);
    double t2 = now();
    if (t0 < from) continue;
    if (!ok) {
      errors++;
      continue;
    }
    if (n == cap) {
      cap *= 2;
      connect_us = realloc(connect_us, cap * sizeof *connect_us);
      cycle_us = realloc(cycle_us, cap * sizeof *cycle_us);
      if (!connect_us || !cycle_us) {
        perror("realloc");
        return 1;
      }
    }
    connect_us[n] = (float)((t1 - t0) * 1e6);
    cycle_us[n] = (float)((t2 - t0) * 1e6);
    n++;
  }
  double elapsed = now() - from;
  printf("{\"connections\":%zu,\"rate\":%.1f,\"connectP50Us\":%.1f,\"connectP99Us\":%.1f,", n, (double)n / elapsed, percentile(connect_us, n, 0.5),
         percentile(connect_us, n, 0.99));
  printf("\"cycleP50Us\":%.1f,\"cycleP99Us\":%.1f,\"errors\":%llu}\n", percentile(cycle_us, n, 0.5), percentile(cycle_us, n, 0.99), errors);
  return 0;
}
