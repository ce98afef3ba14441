// The load generator of bench/sidecar.ts, in C and one epoll thread: it shares a core with the
// endpoint server and must still outrun HAProxy on the other core, which a Node client cannot.
//   tcp-load MODE HOST PORT [conns=N] [seconds=S] [warmup=S] [size=B] [rate=R] [pids=P,Q]
// Modes (all print one JSON line on stdout):
//   rr     closed loop: `conns` connections, each writes `size` bytes and waits for them back
//   conn   `conns` parallel loops of connect, `size`-byte ping, answer, the server's close, close
//          (new connections per second; the server closes first, see tcp-endpoint.c)
//   rate   open loop: `rate` requests/s spread round-robin over `conns` connections, written on
//          schedule whether or not earlier answers are back (pipelined), so a slow proxy cannot
//          hold the schedule back (no coordinated omission); latency from the write to the answer
//   bulk   one connection, reads what the server sends (bytes per second)
//   hold   opens `conns` connections, pings each once (so the proxy has dialled upstream), prints
//          {"held":N} and keeps them open until stdin closes
//   probe  one connection and one ping within a second; exit status 0 when answered
// The first `warmup` seconds are run but not counted. `pids`: processes whose CPU time
// (utime+stime from /proc/PID/stat, all threads) is sampled at the edges of the counted window,
// with the busy share of every core from /proc/stat, so that CPU per request covers exactly the
// requests counted.
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#define MAX_PIDS 8
#define MAX_CPUS 64
#define HIST_US 1000000 // 1 us buckets up to 1 s; slower answers land in the last one
#define RING 4096

static struct sockaddr_in target;
static int conns = 50, size = 64, rate = 1000;
static double seconds = 5, warmup = 1;
static int pids[MAX_PIDS], npids;
static int ep;
static uint32_t *hist;
static uint64_t counted, errors;
static double max_us;

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec + t.tv_nsec / 1e9;
}

static void die(const char *what) {
  perror(what);
  exit(1);
}

static void record(double us) {
  counted++;
  if (us > max_us) max_us = us;
  long b = us < 0 ? 0 : (long)us;
  hist[b >= HIST_US ? HIST_US - 1 : b]++;
}

static double percentile(double p) {
  uint64_t want = (uint64_t)(p * counted), seen = 0;
  for (long b = 0; b < HIST_US; b++) {
    seen += hist[b];
    if (seen > want) return b + 0.5;
  }
  return 0;
}

// --- CPU sampling -------------------------------------------------------------------------------
struct cpu_sample {
  double proc[MAX_PIDS];
  unsigned long long busy[MAX_CPUS], total[MAX_CPUS];
  int ncpus;
};

static double proc_seconds(int pid) {
  char path[64], buf[2048];
  snprintf(path, sizeof path, "/proc/%d/stat", pid);
  int fd = open(path, O_RDONLY);
  if (fd < 0) return -1;
  ssize_t n = read(fd, buf, sizeof buf - 1);
  close(fd);
  if (n <= 0) return -1;
  buf[n] = 0;
  // Fields after the command name, which may hold spaces: state is field 3, utime 14, stime 15.
  char *p = strrchr(buf, ')');
  if (!p) return -1;
  unsigned long long utime = 0, stime = 0;
  if (sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &utime, &stime) != 2) return -1;
  return (double)(utime + stime) / sysconf(_SC_CLK_TCK);
}

static void sample(struct cpu_sample *s) {
  for (int i = 0; i < npids; i++) s->proc[i] = proc_seconds(pids[i]);
  FILE *f = fopen("/proc/stat", "r");
  char line[512];
  s->ncpus = 0;
  while (f && fgets(line, sizeof line, f)) {
    int cpu;
    unsigned long long v[8] = {0};
    if (sscanf(line, "cpu%d %llu %llu %llu %llu %llu %llu %llu %llu", &cpu, &v[0], &v[1], &v[2], &v[3], &v[4], &v[5], &v[6], &v[7]) != 9) continue;
    if (cpu < 0 || cpu >= MAX_CPUS) continue;
    unsigned long long total = 0;
    for (int i = 0; i < 8; i++) total += v[i];
    s->total[cpu] = total;
    s->busy[cpu] = total - v[3] - v[4];
    if (cpu + 1 > s->ncpus) s->ncpus = cpu + 1;
  }
  if (f) fclose(f);
}

static void print_cpu(const struct cpu_sample *a, const struct cpu_sample *b) {
  printf(",\"cpuSeconds\":{");
  for (int i = 0; i < npids; i++) printf("%s\"%d\":%.3f", i ? "," : "", pids[i], b->proc[i] - a->proc[i]);
  printf("},\"coreBusy\":[");
  for (int c = 0; c < b->ncpus; c++) {
    unsigned long long t = b->total[c] - a->total[c];
    printf("%s%.3f", c ? "," : "", t ? (double)(b->busy[c] - a->busy[c]) / t : 0.0);
  }
  printf("]");
}

// --- sockets ------------------------------------------------------------------------------------
static int open_blocking(void) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  if (connect(fd, (struct sockaddr *)&target, sizeof target) < 0) die("connect");
  return fd;
}

static void nonblocking(int fd) { fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK); }

static void write_all(int fd, const char *buf, int n) {
  while (n > 0) {
    ssize_t w = write(fd, buf, n);
    if (w < 0 && errno == EAGAIN) {
      // A 64-byte request only finds a full send buffer when the peer stopped reading.
      struct timespec t = {0, 10000};
      nanosleep(&t, NULL);
      continue;
    }
    if (w <= 0) die("write");
    buf += w;
    n -= w;
  }
}

static void ping(int fd, char *buf) {
  write_all(fd, buf, size);
  int got = 0;
  while (got < size) {
    ssize_t r = read(fd, buf, size - got);
    if (r <= 0) die("read (ping)");
    got += r;
  }
}

static char payload[65536];

// --- rr -----------------------------------------------------------------------------------------
struct rr {
  int fd, got;
  double sent;
};

static void run_rr(void) {
  struct rr *c = calloc(conns, sizeof *c);
  for (int i = 0; i < conns; i++) {
    c[i].fd = open_blocking();
    nonblocking(c[i].fd);
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = &c[i]};
    epoll_ctl(ep, EPOLL_CTL_ADD, c[i].fd, &ev);
  }
  double start = now(), from = start + warmup, until = from + seconds;
  int measuring = 0;
  struct cpu_sample a, b;
  for (int i = 0; i < conns; i++) {
    c[i].sent = now();
    write_all(c[i].fd, payload, size);
  }
  char buf[65536];
  struct epoll_event events[256];
  for (;;) {
    int n = epoll_wait(ep, events, 256, 100);
    double t = now();
    if (!measuring && t >= from) {
      measuring = 1;
      sample(&a);
      counted = 0;
    }
    if (t >= until) break;
    for (int i = 0; i < n; i++) {
      struct rr *x = events[i].data.ptr;
      ssize_t r = read(x->fd, buf, sizeof buf);
      if (r < 0 && errno == EAGAIN) continue;
      if (r <= 0) die("read: the proxy closed a connection");
      x->got += r;
      while (x->got >= size) {
        x->got -= size;
        if (measuring) record((t - x->sent) * 1e6);
        x->sent = t;
        write_all(x->fd, payload, size);
      }
    }
  }
  sample(&b);
  double elapsed = now() - from;
  printf("{\"mode\":\"rr\",\"conns\":%d,\"seconds\":%.3f,\"requests\":%llu,\"rate\":%.1f,\"p50Us\":%.1f,\"p99Us\":%.1f,\"maxUs\":%.1f,\"errors\":0", conns, elapsed,
         (unsigned long long)counted, counted / elapsed, percentile(0.5), percentile(0.99), max_us);
  print_cpu(&a, &b);
  printf("}\n");
}

// --- conn ---------------------------------------------------------------------------------------
struct slot {
  int fd, got, state; // 0 connecting, 1 waiting for the answer
  double started;
};

static void slot_open(struct slot *s) {
  for (;;) {
    s->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    int one = 1;
    setsockopt(s->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    s->started = now();
    s->got = 0;
    s->state = 0;
    int r = connect(s->fd, (struct sockaddr *)&target, sizeof target);
    if (r == 0 || errno == EINPROGRESS) break;
    // EADDRNOTAVAIL (no free source port) and the like: counted, and tried again.
    errors++;
    close(s->fd);
    struct timespec t = {0, 100000};
    nanosleep(&t, NULL);
  }
  struct epoll_event ev = {.events = EPOLLOUT, .data.ptr = s};
  epoll_ctl(ep, EPOLL_CTL_ADD, s->fd, &ev);
}

static void run_conn(void) {
  struct slot *s = calloc(conns, sizeof *s);
  double start = now(), from = start + warmup, until = from + seconds;
  int measuring = 0;
  struct cpu_sample a, b;
  uint64_t errors_before = 0;
  for (int i = 0; i < conns; i++) slot_open(&s[i]);
  char buf[65536];
  struct epoll_event events[256];
  for (;;) {
    int n = epoll_wait(ep, events, 256, 100);
    double t = now();
    if (!measuring && t >= from) {
      measuring = 1;
      sample(&a);
      counted = 0;
      errors_before = errors;
    }
    if (t >= until) break;
    for (int i = 0; i < n; i++) {
      struct slot *x = events[i].data.ptr;
      if (x->state == 0) {
        int err = 0;
        socklen_t len = sizeof err;
        getsockopt(x->fd, SOL_SOCKET, SO_ERROR, &err, &len);
        if (err) goto failed;
        x->state = 1;
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = x};
        epoll_ctl(ep, EPOLL_CTL_MOD, x->fd, &ev);
        if (write(x->fd, payload, size) != size) goto failed;
        continue;
      }
      ssize_t r = read(x->fd, buf, sizeof buf);
      if (r < 0 && errno == EAGAIN) continue;
      if (r < 0 || (r == 0 && x->got < size)) goto failed;
      x->got += r;
      // Done at the server's end of stream, having had the whole answer.
      if (r > 0) continue;
      if (measuring) record((now() - x->started) * 1e6);
      close(x->fd);
      slot_open(x);
      continue;
    failed:
      errors++;
      close(x->fd);
      slot_open(x);
    }
  }
  sample(&b);
  double elapsed = now() - from;
  printf("{\"mode\":\"conn\",\"conns\":%d,\"seconds\":%.3f,\"connections\":%llu,\"rate\":%.1f,\"p50Us\":%.1f,\"p99Us\":%.1f,\"maxUs\":%.1f,\"errors\":%llu", conns, elapsed,
         (unsigned long long)counted, counted / elapsed, percentile(0.5), percentile(0.99), max_us, (unsigned long long)(errors - errors_before));
  print_cpu(&a, &b);
  printf("}\n");
}

// --- rate ---------------------------------------------------------------------------------------
struct paced {
  int fd, got;
  unsigned head, tail;
  double sent[RING];
};

static void run_rate(void) {
  struct paced *c = calloc(conns, sizeof *c);
  for (int i = 0; i < conns; i++) {
    c[i].fd = open_blocking();
    // Pinging once first: the proxy has dialled upstream before the schedule starts.
    ping(c[i].fd, payload);
    nonblocking(c[i].fd);
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = &c[i]};
    epoll_ctl(ep, EPOLL_CTL_ADD, c[i].fd, &ev);
  }
  int tfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK);
  struct epoll_event tev = {.events = EPOLLIN, .data.ptr = NULL};
  epoll_ctl(ep, EPOLL_CTL_ADD, tfd, &tev);
  uint64_t total = (uint64_t)(rate * (warmup + seconds)), warm = (uint64_t)(rate * warmup), next = 0, answered = 0, lost = 0;
  double interval = 1.0 / rate;
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  double start = ts.tv_sec + ts.tv_nsec / 1e9;
  struct cpu_sample a, b;
  int measuring = 0;
  char buf[65536];
  struct epoll_event events[256];
  // Every request's index decides whether it is counted: those scheduled in the warm-up are not.
  uint64_t *index = calloc((size_t)conns * RING, sizeof *index);
  for (;;) {
    double t = now();
    while (next < total && start + next * interval <= t) {
      struct paced *x = &c[next % conns];
      if (x->tail - x->head >= RING) die("more than 4096 requests waiting on one connection");
      if (next == warm && !measuring) {
        measuring = 1;
        sample(&a);
      }
      x->sent[x->tail % RING] = now();
      index[(size_t)(x - c) * RING + x->tail % RING] = next;
      x->tail++;
      write_all(x->fd, payload, size);
      next++;
    }
    if (next >= total && answered >= total) break;
    if (next >= total && t > start + (warmup + seconds) + 5) {
      lost = total - answered;
      break;
    }
    if (next < total) {
      double at = start + next * interval;
      struct itimerspec it = {.it_value = {.tv_sec = (time_t)at, .tv_nsec = (long)((at - (time_t)at) * 1e9)}};
      timerfd_settime(tfd, TFD_TIMER_ABSTIME, &it, NULL);
    }
    int n = epoll_wait(ep, events, 256, 100);
    for (int i = 0; i < n; i++) {
      struct paced *x = events[i].data.ptr;
      if (!x) {
        uint64_t expirations;
        // Only the wake-up matters; the schedule is read from the clock.
        (void)!read(tfd, &expirations, sizeof expirations);
        continue;
      }
      ssize_t r = read(x->fd, buf, sizeof buf);
      if (r < 0 && errno == EAGAIN) continue;
      if (r <= 0) die("read: the proxy closed a connection");
      double arrived = now();
      x->got += r;
      while (x->got >= size && x->head != x->tail) {
        x->got -= size;
        unsigned k = x->head % RING;
        if (index[(size_t)(x - c) * RING + k] >= warm) record((arrived - x->sent[k]) * 1e6);
        x->head++;
        answered++;
      }
    }
  }
  sample(&b);
  printf("{\"mode\":\"rate\",\"conns\":%d,\"rate\":%d,\"seconds\":%.3f,\"requests\":%llu,\"p50Us\":%.1f,\"p90Us\":%.1f,\"p99Us\":%.1f,\"p999Us\":%.1f,\"maxUs\":%.1f,\"lost\":%llu", conns, rate, seconds,
         (unsigned long long)counted, percentile(0.5), percentile(0.9), percentile(0.99), percentile(0.999), max_us, (unsigned long long)lost);
  print_cpu(&a, &b);
  printf("}\n");
}

// --- bulk, hold, probe --------------------------------------------------------------------------
static void run_bulk(void) {
  int fd = open_blocking();
  static char buf[1 << 18];
  double start = now(), from = start + warmup, until = from + seconds;
  unsigned long long bytes = 0;
  int measuring = 0;
  struct cpu_sample a, b;
  for (;;) {
    ssize_t r = read(fd, buf, sizeof buf);
    if (r <= 0) die("read (bulk)");
    double t = now();
    if (!measuring && t >= from) {
      measuring = 1;
      sample(&a);
      bytes = 0;
      from = t;
    }
    if (measuring) bytes += r;
    if (t >= until) break;
  }
  sample(&b);
  double elapsed = now() - from;
  printf("{\"mode\":\"bulk\",\"seconds\":%.3f,\"bytes\":%llu,\"gbitPerSecond\":%.3f", elapsed, bytes, bytes * 8 / elapsed / 1e9);
  print_cpu(&a, &b);
  printf("}\n");
  close(fd);
}

static void run_hold(void) {
  int *fds = calloc(conns, sizeof *fds);
  for (int i = 0; i < conns; i++) {
    fds[i] = open_blocking();
    ping(fds[i], payload);
  }
  printf("{\"held\":%d}\n", conns);
  fflush(stdout);
  char c;
  while (read(0, &c, 1) > 0) {
  }
}

static int run_probe(void) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  struct timeval tv = {1, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  if (connect(fd, (struct sockaddr *)&target, sizeof target) < 0) return 1;
  if (write(fd, payload, size) != size) return 1;
  int got = 0;
  while (got < size) {
    ssize_t r = read(fd, payload, size - got);
    if (r <= 0) return 1;
    got += r;
  }
  return 0;
}

int main(int argc, char **argv) {
  if (argc < 4) {
    fprintf(stderr, "usage: tcp-load rr|conn|rate|bulk|hold|probe HOST PORT [conns=N] [seconds=S] [warmup=S] [size=B] [rate=R] [pids=P,Q]\n");
    return 2;
  }
  signal(SIGPIPE, SIG_IGN);
  // Timer wake-ups on schedule: the default 50 us slack would be noise in the paced latency.
  prctl(PR_SET_TIMERSLACK, 1UL);
  struct rlimit rl;
  getrlimit(RLIMIT_NOFILE, &rl);
  rl.rlim_cur = rl.rlim_max;
  setrlimit(RLIMIT_NOFILE, &rl);
  const char *mode = argv[1];
  target.sin_family = AF_INET;
  target.sin_port = htons(atoi(argv[3]));
  if (inet_pton(AF_INET, argv[2], &target.sin_addr) != 1) {
    fprintf(stderr, "tcp-load: %s is not an IPv4 address\n", argv[2]);
    return 2;
  }
  for (int i = 4; i < argc; i++) {
    char *v = strchr(argv[i], '=');
    if (!v) continue;
    *v++ = 0;
    if (!strcmp(argv[i], "conns")) conns = atoi(v);
    else if (!strcmp(argv[i], "seconds")) seconds = atof(v);
    else if (!strcmp(argv[i], "warmup")) warmup = atof(v);
    else if (!strcmp(argv[i], "size")) size = atoi(v);
    else if (!strcmp(argv[i], "rate")) rate = atoi(v);
    else if (!strcmp(argv[i], "pids"))
      for (char *p = strtok(v, ","); p && npids < MAX_PIDS; p = strtok(NULL, ",")) pids[npids++] = atoi(p);
  }
  if (size < 1 || size > (int)sizeof payload) size = 64;
  memset(payload, 'x', sizeof payload);
  hist = calloc(HIST_US, sizeof *hist);
  ep = epoll_create1(0);
  if (!hist || ep < 0) die("setup");
  if (!strcmp(mode, "rr")) run_rr();
  else if (!strcmp(mode, "conn")) run_conn();
  else if (!strcmp(mode, "rate")) run_rate();
  else if (!strcmp(mode, "bulk")) run_bulk();
  else if (!strcmp(mode, "hold")) run_hold();
  else if (!strcmp(mode, "probe")) return run_probe();
  else {
    fprintf(stderr, "tcp-load: unknown mode %s\n", mode);
    return 2;
  }
  return 0;
}
