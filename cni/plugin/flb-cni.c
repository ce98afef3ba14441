// flb-cni: the CNI plugin on the host. It runs for every pod sandbox, on hosts that may have no
// Node.js, so it is a small C program that only forwards: the CNI environment and the config on
// stdin go to the flb-mesh node agent over a Unix socket; the agent's answer (exit code and the
// exact stdout) comes back. All CNI logic (parsing, prevResult, the pod's settings, iptables) is in
// the agent (cni/agent.ts). VERSION is answered here, so a runtime can probe the plugin without
// the agent.
//
// Wire format, both directions, all integers big-endian uint32:
//   request:  7 fields, each <length><bytes>: CNI_COMMAND, CNI_CONTAINERID, CNI_NETNS, CNI_IFNAME,
//             CNI_ARGS, CNI_PATH, stdin
//   response: <exit code><length><stdout bytes>
//
// Every step has a deadline (FLB_CNI_TIMEOUT_MS, default 60 s, for the whole call): the runtime
// holds a pod sandbox while the plugin runs, so an agent that stops reading or answering must
// fail this call (CNI error 11, try again later), not block every sandbox on the node.
//
// Built with -DFLB_CNI_FUZZ, main() is left out so that fuzz/target.c can drive the parsers.
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <poll.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define DEFAULT_SOCKET "/var/run/flb-mesh/cni-agent.sock"
#define DEFAULT_LOG "/var/log/flb-mesh-cni.log"
#define DEFAULT_TIMEOUT_MS 60000
#define MAX_STDIN (4 * 1024 * 1024)
#define MAX_ANSWER (4 * 1024 * 1024)
#define VERSION_SIZE 32
#define CNI_ERR_IO 5
#define CNI_ERR_INVALID_CONFIG 7
#define CNI_ERR_TRY_AGAIN 11

// ---- JSON strings

// Decodes one UTF-8 sequence at `in` (at most `length` bytes): its length, or 0 when it is not
// well-formed (overlong, a surrogate, above U+10FFFF, cut short).
static size_t utf8_sequence(const unsigned char *in, size_t length) {
  unsigned char b = in[0];
  size_t need;
  uint32_t point, min;
  if (b < 0x80) return 1;
  if (b >= 0xC2 && b <= 0xDF) need = 2, point = b & 0x1F, min = 0x80;
  else if (b >= 0xE0 && b <= 0xEF) need = 3, point = b & 0x0F, min = 0x800;
  else if (b >= 0xF0 && b <= 0xF4) need = 4, point = b & 0x07, min = 0x10000;
  else return 0;
  if (length < need) return 0;
  for (size_t i = 1; i < need; i++) {
    if ((in[i] & 0xC0) != 0x80) return 0;
    point = (point << 6) | (in[i] & 0x3F);
  }
  if (point < min || point > 0x10FFFF || (point >= 0xD800 && point <= 0xDFFF)) return 0;
  return need;
}

// Writes `in` as the inside of a JSON string into `out` (NUL-terminated): quotes, backslashes and
// control characters escaped, bytes that are not UTF-8 replaced by U+FFFD. What does not fit is
// left out whole (never half an escape or half a character). Returns the input bytes consumed.
static size_t json_escape(char *out, size_t size, const char *in, size_t length) {
  static const char hex[] = "0123456789abcdef";
  const unsigned char *text = (const unsigned char *)in;
  size_t used = 0, i = 0;
  if (size == 0) return 0;
  while (i < length) {
    char piece[8];
    size_t piece_length, consumed = 1;
    unsigned char b = text[i];
    if (b == '"' || b == '\\') piece[0] = '\\', piece[1] = (char)b, piece_length = 2;
    else if (b == '\n') memcpy(piece, "\\n", 2), piece_length = 2;
    else if (b == '\r') memcpy(piece, "\\r", 2), piece_length = 2;
    else if (b == '\t') memcpy(piece, "\\t", 2), piece_length = 2;
    else if (b < 0x20 || b == 0x7F) {
      memcpy(piece, "\\u00", 4);
      piece[4] = hex[b >> 4];
      piece[5] = hex[b & 0xF];
      piece_length = 6;
    } else if (b < 0x80) piece[0] = (char)b, piece_length = 1;
    else if ((consumed = utf8_sequence(text + i, length - i)) > 0) {
      memcpy(piece, text + i, consumed);
      piece_length = consumed;
    } else {
      memcpy(piece, "\\ufffd", 6);
      piece_length = 6;
      consumed = 1;
    }
    if (used + piece_length + 1 > size) break;
    memcpy(out + used, piece, piece_length);
    used += piece_length;
    i += consumed;
  }
  out[used] = 0;
  return i;
}

// The cniVersion of the config, for an error result in the runtime's version: the value of the
// first "cniVersion" key whose value is a plain version string, else 1.0.0. The config is not
// parsed (the agent does that); this only has to be safe on anything.
static void config_version(const char *config, size_t length, char *out, size_t size) {
  static const char key[] = "\"cniVersion\"";
  const size_t key_length = sizeof key - 1;
  snprintf(out, size, "1.0.0");
  const char *end = config ? config + length : NULL;
  for (const char *at = config; at && (size_t)(end - at) >= key_length; at++) {
    at = memmem(at, (size_t)(end - at), key, key_length);
    if (!at) return;
    const char *p = at + key_length;
    while (p < end && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r')) p++;
    if (p == end || *p++ != ':') continue;
    while (p < end && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r')) p++;
    if (p == end || *p++ != '"') continue;
    const char *value = p;
    while (p < end && p - value < (ptrdiff_t)size &&
           ((*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || *p == '.' || *p == '-' || *p == '+'))
      p++;
    size_t value_length = (size_t)(p - value);
    if (p == end || *p != '"' || value_length == 0 || value_length >= size) continue;
    memcpy(out, value, value_length);
    out[value_length] = 0;
    return;
  }
}

// An error result (CNI spec, "Error"), one line.
static void error_result(char *out, size_t size, const char *version, int code, const char *message) {
  char escaped_version[VERSION_SIZE * 6], escaped_message[4096];
  json_escape(escaped_version, sizeof escaped_version, version, strlen(version));
  json_escape(escaped_message, sizeof escaped_message, message, strlen(message));
  snprintf(out, size, "{\"cniVersion\":\"%s\",\"code\":%d,\"msg\":\"%s\"}\n", escaped_version, code, escaped_message);
}

// ---- deadlines

static uint64_t now_ms(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (uint64_t)t.tv_sec * 1000 + (uint64_t)t.tv_nsec / 1000000;
}

// Milliseconds left (a socket timeout of 0 would mean none: callers stop at 0 instead).
static uint64_t remaining_ms(uint64_t deadline) {
  uint64_t now = now_ms();
  return now < deadline ? deadline - now : 0;
}


// ---- input and the agent's socket

enum io_status { IO_OK = 0, IO_TOO_LARGE, IO_FAILED, IO_TIMED_OUT, IO_CLOSED };

// Waits until `fd` is ready for `events`, for no longer than the deadline leaves. The sends and
// receives below do not block themselves: a socket timeout is per call in the kernel (a Unix
// socket's send may wait it out more than once), a poll with what is left is exact.
static enum io_status wait_ready(int fd, short events, uint64_t deadline) {
  for (;;) {
    uint64_t left = remaining_ms(deadline);
    if (left == 0) return IO_TIMED_OUT;
    struct pollfd ready = {.fd = fd, .events = events};
    int polled = poll(&ready, 1, left > INT32_MAX ? INT32_MAX : (int)left);
    if (polled > 0) return IO_OK;
    if (polled < 0 && errno != EINTR) return IO_FAILED;
  }
}

static enum io_status send_all(int fd, const void *data, size_t length, uint64_t deadline) {
  const char *p = data;
  while (length > 0) {
    ssize_t n = send(fd, p, length, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      enum io_status ready = wait_ready(fd, POLLOUT, deadline);
      if (ready != IO_OK) return ready;
      continue;
    }
    if (n <= 0) return IO_FAILED;
    p += n;
    length -= (size_t)n;
  }
  return IO_OK;
}

static enum io_status receive_all(int fd, void *data, size_t length, uint64_t deadline) {
  char *p = data;
  while (length > 0) {
    ssize_t n = recv(fd, p, length, MSG_DONTWAIT);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      enum io_status ready = wait_ready(fd, POLLIN, deadline);
      if (ready != IO_OK) return ready;
      continue;
    }
    if (n == 0) return IO_CLOSED;
    if (n < 0) return IO_FAILED;
    p += n;
    length -= (size_t)n;
  }
  return IO_OK;
}

// Reads `fd` to its end into `buffer` (at most `capacity` bytes): an input that does not fit is
// refused, not cut; an interrupted read is retried.
static enum io_status read_input(int fd, char *buffer, size_t capacity, uint64_t deadline, size_t *length) {
  *length = 0;
  for (;;) {
    enum io_status ready = wait_ready(fd, POLLIN, deadline);
    if (ready != IO_OK) return ready;
    char probe;
    // Full: one more byte tells a config of exactly `capacity` bytes from a larger one.
    ssize_t n = *length < capacity ? read(fd, buffer + *length, capacity - *length) : read(fd, &probe, 1);
    if (n < 0 && (errno == EINTR || errno == EAGAIN)) continue;
    if (n < 0) return IO_FAILED;
    if (n == 0) return IO_OK;
    if (*length == capacity) return IO_TOO_LARGE;
    *length += (size_t)n;
  }
}

static enum io_status send_field(int fd, const char *value, size_t length, uint64_t deadline) {
  uint32_t n = htonl((uint32_t)length);
  enum io_status status = send_all(fd, &n, 4, deadline);
  return status != IO_OK || length == 0 ? status : send_all(fd, value, length, deadline);
}

// The exit code the plugin passes on: a process exit status is 0-255, and the agent's uint32
// must not wrap to 0 (success) from 256.
static int exit_code_of(uint32_t agent_code) { return agent_code > 255 ? 1 : (int)agent_code; }

typedef struct {
  int exit_code;
  char *stdout_bytes; // malloc'd, the caller frees it
  size_t length;
} agent_answer;

// <exit code><length><stdout bytes>, read whole or not at all.
static enum io_status read_answer(int fd, uint64_t deadline, agent_answer *answer) {
  uint32_t header[2];
  *answer = (agent_answer){0};
  enum io_status status = receive_all(fd, header, sizeof header, deadline);
  if (status != IO_OK) return status;
  uint32_t length = ntohl(header[1]);
  if (length > MAX_ANSWER) return IO_TOO_LARGE;
  char *bytes = malloc(length + 1);
  if (!bytes) return IO_FAILED;
  status = receive_all(fd, bytes, length, deadline);
  if (status != IO_OK) {
    free(bytes);
    return status;
  }
  bytes[length] = 0;
  *answer = (agent_answer){.exit_code = exit_code_of(ntohl(header[0])), .stdout_bytes = bytes, .length = length};
  return IO_OK;
}

#ifndef FLB_CNI_FUZZ

static bool set_socket_timeout(int fd, int option, uint64_t deadline) {
  uint64_t left = remaining_ms(deadline);
  if (left == 0) return false;
  struct timeval timeout = {.tv_sec = (time_t)(left / 1000), .tv_usec = (suseconds_t)(left % 1000) * 1000};
  return setsockopt(fd, SOL_SOCKET, option, &timeout, sizeof timeout) == 0;
}

static const char *env_or(const char *name, const char *fallback) {
  const char *value = getenv(name);
  return value && *value ? value : fallback;
}

// Logs go to a file: stdout is the CNI result and stderr is not read by every runtime.
static void log_line(const char *level, const char *message) {
  FILE *f = fopen(env_or("FLB_CNI_LOG", DEFAULT_LOG), "a");
  if (!f) return;
  time_t now = time(NULL);
  char stamp[32], command[256], container[1024], text[4096];
  strftime(stamp, sizeof stamp, "%Y-%m-%dT%H:%M:%SZ", gmtime(&now));
  const char *cmd = env_or("CNI_COMMAND", ""), *id = env_or("CNI_CONTAINERID", "");
  json_escape(command, sizeof command, cmd, strlen(cmd));
  json_escape(container, sizeof container, id, strlen(id));
  json_escape(text, sizeof text, message, strlen(message));
  fprintf(f, "{\"time\":\"%s\",\"level\":\"%s\",\"command\":\"%s\",\"container\":\"%s\",\"msg\":\"%s\"}\n", stamp, level, command, container,
          text);
  fclose(f);
}

static int write_all(int fd, const char *data, size_t length) {
  while (length > 0) {
    ssize_t n = write(fd, data, length);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return -1;
    data += n;
    length -= (size_t)n;
  }
  return 0;
}

static int fail(const char *config, size_t config_length, int code, const char *message) {
  char version[VERSION_SIZE], result[8192];
  config_version(config, config_length, version, sizeof version);
  log_line("error", message);
  error_result(result, sizeof result, version, code, message);
  write_all(1, result, strlen(result));
  return 1;
}

static uint64_t timeout_ms(void) {
  const char *text = getenv("FLB_CNI_TIMEOUT_MS");
  char *end;
  unsigned long long value = text ? strtoull(text, &end, 10) : 0;
  return text && *text && !*end && value > 0 && value <= 3600000 ? value : DEFAULT_TIMEOUT_MS;
}

// What a failed exchange with the agent says.
static int fail_exchange(const char *config, size_t config_length, const char *step, enum io_status status, uint64_t timeout) {
  char message[512];
  if (status == IO_TIMED_OUT)
    snprintf(message, sizeof message, "the flb-mesh CNI agent did not %s within %llu ms; is it overloaded or stuck?", step,
             (unsigned long long)timeout);
  else if (status == IO_CLOSED)
    snprintf(message, sizeof message, "the flb-mesh CNI agent closed the connection without an answer");
  else if (status == IO_TOO_LARGE)
    snprintf(message, sizeof message, "the flb-mesh CNI agent's answer is larger than %d bytes", MAX_ANSWER);
  else
    snprintf(message, sizeof message, "the flb-mesh CNI agent could not %s: %s", step, strerror(errno));
  return fail(config, config_length, status == IO_TOO_LARGE ? CNI_ERR_IO : CNI_ERR_TRY_AGAIN, message);
}

int main(void) {
  const char *command = getenv("CNI_COMMAND");
  if (command && strcmp(command, "VERSION") == 0) {
    const char *versions = "{\"cniVersion\":\"1.1.0\",\"supportedVersions\":[\"0.3.0\",\"0.3.1\",\"0.4.0\",\"1.0.0\",\"1.1.0\"]}\n";
    return write_all(1, versions, strlen(versions)) ? 1 : 0;
  }
  uint64_t timeout = timeout_ms(), deadline = now_ms() + timeout;

  char *config = malloc(MAX_STDIN + 1);
  if (!config) return fail(NULL, 0, CNI_ERR_IO, "out of memory");
  size_t config_length = 0;
  enum io_status input = read_input(0, config, MAX_STDIN, deadline, &config_length);
  config[config_length] = 0;
  if (input == IO_TOO_LARGE) return fail(config, config_length, CNI_ERR_INVALID_CONFIG, "the network configuration on stdin is larger than 4 MiB");
  if (input == IO_TIMED_OUT) return fail(config, config_length, CNI_ERR_IO, "stdin did not end within the plugin's timeout");
  if (input != IO_OK) {
    char message[256];
    snprintf(message, sizeof message, "reading the network configuration from stdin failed: %s", strerror(errno));
    return fail(config, config_length, CNI_ERR_IO, message);
  }
  if (!command || !*command) return fail(config, config_length, 4, "CNI_COMMAND is not set");

  const char *socket_path = env_or("FLB_CNI_AGENT_SOCKET", DEFAULT_SOCKET);
  struct sockaddr_un address = {.sun_family = AF_UNIX};
  if (strlen(socket_path) >= sizeof address.sun_path) return fail(config, config_length, CNI_ERR_INVALID_CONFIG, "the agent socket path is too long");
  strcpy(address.sun_path, socket_path);
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  // A blocking connect to a Unix socket waits while the agent's backlog is full: SO_SNDTIMEO
  // bounds it too.
  int connected = fd < 0 || !set_socket_timeout(fd, SO_SNDTIMEO, deadline) ? -1 : connect(fd, (struct sockaddr *)&address, sizeof address);
  if (connected != 0) {
    // A pod must not start without its rules: fail, and let the runtime try again.
    char message[512], reason[128];
    if (errno == EAGAIN || errno == EINPROGRESS) snprintf(reason, sizeof reason, "no connection within %llu ms", (unsigned long long)timeout);
    else snprintf(reason, sizeof reason, "%s", strerror(errno));
    snprintf(message, sizeof message, "the flb-mesh CNI agent is not reachable at %s (%s); is the flb-mesh-cni DaemonSet running on this node?",
             socket_path, reason);
    return fail(config, config_length, CNI_ERR_TRY_AGAIN, message);
  }

  const char *names[] = {"CNI_COMMAND", "CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME", "CNI_ARGS", "CNI_PATH"};
  enum io_status status = IO_OK;
  for (size_t i = 0; i < sizeof names / sizeof *names && status == IO_OK; i++) {
    const char *value = getenv(names[i]);
    status = send_field(fd, value ? value : "", value ? strlen(value) : 0, deadline);
  }
  if (status == IO_OK) status = send_field(fd, config, config_length, deadline);
  if (status != IO_OK) return fail_exchange(config, config_length, "take the request", status, timeout);

  agent_answer answer;
  status = read_answer(fd, deadline, &answer);
  if (status != IO_OK) return fail_exchange(config, config_length, "answer", status, timeout);
  close(fd);
  if (write_all(1, answer.stdout_bytes, answer.length)) return 1;
  return answer.exit_code;
}

#endif
