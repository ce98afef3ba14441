// libFuzzer target for what the CNI plugin (../flb-cni.c) does with bytes it does not control:
// the cniVersion it takes from the config on stdin, the JSON strings it writes (error results,
// log lines) from the environment, the config and the socket path, and the agent's answer
// (<exit code><length><bytes>) read from a socket; also how it reads stdin and frames a field.
// Each input goes through all of them, and the invariants below abort (a crash, kept by
// libFuzzer under crashers/) when broken.
//
// Built by scripts/setup.sh with clang -fsanitize=fuzzer,address,undefined; run by
// cni/plugin/fuzz.test.ts.
#define FLB_CNI_FUZZ
#include "../flb-cni.c"

#include <sys/socket.h>

static void require(bool ok, const char *invariant) {
  if (ok) return;
  fprintf(stderr, "flb-cni fuzz: invariant broken: %s\n", invariant);
  abort();
}

// The inside of a JSON string, as RFC 8259 allows it: its end (the closing quote, or NUL), or NULL
// when it is not one. Decoded into `out` (UTF-8) when given.
static const char *json_string(const char *p, char *out, size_t *out_length) {
  size_t used = 0;
  while (*p && *p != '"') {
    unsigned char b = (unsigned char)*p;
    if (b < 0x20) return NULL;
    if (b != '\\') {
      size_t n = utf8_sequence((const unsigned char *)p, strlen(p));
      if (n == 0) return NULL;
      if (out) memcpy(out + used, p, n);
      used += n;
      p += n;
      continue;
    }
    p++;
    const char *simple = strchr("\"\\/bfnrt", *p);
    if (*p && simple) {
      if (out) out[used] = "\"\\/\b\f\n\r\t"[simple - "\"\\/bfnrt"];
      used++;
      p++;
      continue;
    }
    if (*p != 'u') return NULL;
    uint32_t point = 0;
    for (int i = 1; i <= 4; i++) {
      char c = p[i];
      int digit = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
      if (digit < 0) return NULL;
      point = point * 16 + (uint32_t)digit;
    }
    p += 5;
    if (point >= 0xD800 && point <= 0xDFFF) return NULL; // json_escape never writes surrogates
    // UTF-8 of a code point below U+10000
    char encoded[3];
    size_t n;
    if (point < 0x80) encoded[0] = (char)point, n = 1;
    else if (point < 0x800) encoded[0] = (char)(0xC0 | (point >> 6)), encoded[1] = (char)(0x80 | (point & 0x3F)), n = 2;
    else
      encoded[0] = (char)(0xE0 | (point >> 12)), encoded[1] = (char)(0x80 | ((point >> 6) & 0x3F)), encoded[2] = (char)(0x80 | (point & 0x3F)), n = 3;
    if (out) memcpy(out + used, encoded, n);
    used += n;
  }
  if (out_length) *out_length = used;
  return p;
}

// What json_escape must have kept of `in`: its bytes, each one that is not UTF-8 as U+FFFD.
static size_t expected_text(const uint8_t *in, size_t length, char *out) {
  size_t used = 0;
  for (size_t i = 0; i < length;) {
    size_t n = utf8_sequence(in + i, length - i);
    if (n == 0) {
      memcpy(out + used, "\xEF\xBF\xBD", 3);
      used += 3;
      i++;
    } else {
      memcpy(out + used, in + i, n);
      used += n;
      i += n;
    }
  }
  return used;
}

static void check_escaping(const uint8_t *data, size_t size) {
  // Room for everything, then a small buffer that cuts it (size from the first byte).
  size_t sizes[2] = {size * 6 + 1, size ? (size_t)data[0] % 64 + 1 : 1};
  for (int round = 0; round < 2; round++) {
    char *escaped = malloc(sizes[round]);
    size_t consumed = json_escape(escaped, sizes[round], (const char *)data, size);
    require(consumed <= size, "json_escape consumed at most its input");
    require(strlen(escaped) < sizes[round], "json_escape stayed within its buffer");
    if (round == 0) require(consumed == size, "json_escape kept everything when there was room");
    char *decoded = malloc(strlen(escaped) + 1), *expected = malloc(consumed * 3 + 1);
    size_t decoded_length = 0;
    const char *end = json_string(escaped, decoded, &decoded_length);
    require(end != NULL && *end == 0, "json_escape wrote a valid JSON string with no unescaped quote");
    size_t expected_length = expected_text(data, consumed, expected);
    require(decoded_length == expected_length && memcmp(decoded, expected, expected_length) == 0, "json_escape round-trips");
    free(decoded);
    free(expected);
    free(escaped);
  }
}

static void check_version_and_result(const uint8_t *data, size_t size) {
  char version[VERSION_SIZE];
  config_version((const char *)data, size, version, sizeof version);
  size_t length = strlen(version);
  require(length > 0 && length < sizeof version, "cniVersion is a short non-empty string");
  for (size_t i = 0; i < length; i++) require(strchr("0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.-+", version[i]) != NULL, "cniVersion is plain");

  // The error result with the input as its message: one JSON object on one line.
  char *message = malloc(size + 1), result[8192];
  memcpy(message, data, size);
  message[size] = 0;
  error_result(result, sizeof result, version, 11, message);
  const char *p = result;
  require(strncmp(p, "{\"cniVersion\":\"", 15) == 0, "error result starts with cniVersion");
  p = json_string(p + 15, NULL, NULL);
  require(p && strncmp(p, "\",\"code\":11,\"msg\":\"", 19) == 0, "error result has the code");
  p = json_string(p + 19, NULL, NULL);
  require(p && strcmp(p, "\"}\n") == 0, "error result ends after msg, on one line");
  free(message);
}

static void check_answer(const uint8_t *data, size_t size) {
  int pair[2];
  require(socketpair(AF_UNIX, SOCK_STREAM, 0, pair) == 0, "socketpair");
  // Inputs stay far below the socket buffer (-max_len), so this write does not block.
  require(send_all(pair[1], data, size, now_ms() + 1000) == IO_OK, "writing the answer");
  shutdown(pair[1], SHUT_WR);
  agent_answer answer;
  enum io_status status = read_answer(pair[0], now_ms() + 1000, &answer);
  if (size < 8) require(status == IO_CLOSED, "a short header is refused");
  else {
    uint32_t code, length;
    memcpy(&code, data, 4);
    memcpy(&length, data + 4, 4);
    code = ntohl(code);
    length = ntohl(length);
    if (length > MAX_ANSWER) require(status == IO_TOO_LARGE, "an answer over the limit is refused");
    else if (size - 8 < length) require(status == IO_CLOSED, "a cut answer is refused");
    else {
      require(status == IO_OK, "a whole answer is read");
      require(answer.exit_code >= 0 && answer.exit_code <= 255, "the exit code is a process exit status");
      require(answer.exit_code == (code > 255 ? 1 : (int)code), "codes above 255 become 1, others stay");
      require(answer.length == length && memcmp(answer.stdout_bytes, data + 8, length) == 0, "stdout is passed on exactly");
    }
  }
  free(answer.stdout_bytes);
  close(pair[0]);
  close(pair[1]);
}

// stdin: read whole when it fits the buffer, refused (not cut) when it does not; and the field
// the plugin frames it in for the agent.
static void check_input_and_field(const uint8_t *data, size_t size) {
  int pipe_fds[2];
  require(pipe(pipe_fds) == 0, "pipe");
  require(write(pipe_fds[1], data, size) == (ssize_t)size, "writing stdin"); // below the pipe's 64 KiB
  close(pipe_fds[1]);
  size_t capacity = size ? (size_t)data[0] * 16 : 0, length;
  char *buffer = malloc(capacity + 1);
  enum io_status status = read_input(pipe_fds[0], buffer, capacity, now_ms() + 1000, &length);
  close(pipe_fds[0]);
  if (size > capacity) require(status == IO_TOO_LARGE, "stdin larger than the buffer is refused");
  else require(status == IO_OK && length == size && memcmp(buffer, data, size) == 0, "stdin is read whole");
  free(buffer);

  int pair[2];
  require(socketpair(AF_UNIX, SOCK_STREAM, 0, pair) == 0, "socketpair");
  require(send_field(pair[1], (const char *)data, size, now_ms() + 1000) == IO_OK, "sending a field");
  shutdown(pair[1], SHUT_WR);
  uint32_t header;
  char *field = malloc(size + 1);
  require(receive_all(pair[0], &header, 4, now_ms() + 1000) == IO_OK && ntohl(header) == size, "the field's length");
  require(receive_all(pair[0], field, size, now_ms() + 1000) == IO_OK && memcmp(field, data, size) == 0, "the field's bytes");
  require(receive_all(pair[0], field, 1, now_ms() + 1000) == IO_CLOSED, "nothing after the field");
  free(field);
  close(pair[0]);
  close(pair[1]);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  // The pipe and socket writes above must not block: fuzz.test.ts runs with -max_len=4096.
  if (size > 16384) return 0;
  check_escaping(data, size);
  check_version_and_result(data, size);
  check_answer(data, size);
  check_input_and_field(data, size);
  return 0;
}
