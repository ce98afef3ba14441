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
#include <arpa/inet.h>
#include <errno.h>
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
#define MAX_STDIN (4 * 1024 * 1024)
#define CNI_ERR_TRY_AGAIN 11
#define CNI_ERR_IO 5

static const char *log_path(void) {
  const char *p = getenv("FLB_CNI_LOG");
  return p && *p ? p : DEFAULT_LOG;
}

// Logs go to a file: stdout is the CNI result and stderr is not read by every runtime.
static void log_line(const char *level, const char *message) {
  FILE *f = fopen(log_path(), "a");
  if (!f) return;
  time_t now = time(NULL);
  char stamp[32];
  strftime(stamp, sizeof stamp, "%Y-%m-%dT%H:%M:%SZ", gmtime(&now));
  const char *cmd = getenv("CNI_COMMAND");
  const char *id = getenv("CNI_CONTAINERID");
  fprintf(f, "{\"time\":\"%s\",\"level\":\"%s\",\"command\":\"%s\",\"container\":\"%s\",\"msg\":\"%s\"}\n", stamp, level, cmd ? cmd : "",
          id ? id : "", message);
  fclose(f);
}

// The cniVersion of the config, for an error result in the runtime's version (default 1.0.0).
static void config_version(const char *config, char *out, size_t size) {
  snprintf(out, size, "1.0.0");
  const char *key = config ? strstr(config, "\"cniVersion\"") : NULL;
  if (!key) return;
  const char *colon = strchr(key + 12, ':');
  const char *open = colon ? strchr(colon, '"') : NULL;
  const char *close = open ? strchr(open + 1, '"') : NULL;
  if (!open || !close || close - open - 1 <= 0 || (size_t)(close - open - 1) >= size) return;
  memcpy(out, open + 1, close - open - 1);
  out[close - open - 1] = 0;
}

static int fail(const char *config, int code, const char *message) {
  char version[32];
  config_version(config, version, sizeof version);
  log_line("error", message);
  printf("{\"cniVersion\":\"%s\",\"code\":%d,\"msg\":\"%s\"}\n", version, code, message);
  return 1;
}

static int write_all(int fd, const void *data, size_t length) {
  const char *p = data;
  while (length > 0) {
    ssize_t n = write(fd, p, length);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return -1;
    p += n;
    length -= (size_t)n;
  }
  return 0;
}

static int read_all(int fd, void *data, size_t length) {
  char *p = data;
  while (length > 0) {
    ssize_t n = read(fd, p, length);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return -1;
    p += n;
    length -= (size_t)n;
  }
  return 0;
}

static int send_field(int fd, const char *value, size_t length) {
  uint32_t n = htonl((uint32_t)length);
  return write_all(fd, &n, 4) || (length && write_all(fd, value, length)) ? -1 : 0;
}

int main(void) {
  const char *command = getenv("CNI_COMMAND");
  if (command && strcmp(command, "VERSION") == 0) {
    printf("{\"cniVersion\":\"1.1.0\",\"supportedVersions\":[\"0.3.0\",\"0.3.1\",\"0.4.0\",\"1.0.0\",\"1.1.0\"]}\n");
    return 0;
  }

  char *config = malloc(MAX_STDIN + 1);
  if (!config) return fail(NULL, CNI_ERR_IO, "out of memory");
  size_t config_length = 0;
  ssize_t n;
  while ((n = read(0, config + config_length, MAX_STDIN - config_length)) > 0) config_length += (size_t)n;
  config[config_length] = 0;
  if (!command || !*command) return fail(config, 4, "CNI_COMMAND is not set");

  const char *socket_path = getenv("FLB_CNI_AGENT_SOCKET");
  if (!socket_path || !*socket_path) socket_path = DEFAULT_SOCKET;
  int fd = socket(AF_UNIX, SOCK_STREAM, 0);
  struct sockaddr_un address = {.sun_family = AF_UNIX};
  if (strlen(socket_path) >= sizeof address.sun_path) return fail(config, 7, "the agent socket path is too long");
  strcpy(address.sun_path, socket_path);
  if (fd < 0 || connect(fd, (struct sockaddr *)&address, sizeof address) != 0) {
    // A pod must not start without its rules: fail, and let the runtime try again.
    char message[512];
    snprintf(message, sizeof message,
             "the flb-mesh CNI agent is not reachable at %s (%s); is the flb-mesh-cni DaemonSet running on this node?", socket_path,
             strerror(errno));
    return fail(config, CNI_ERR_TRY_AGAIN, message);
  }
  struct timeval timeout = {.tv_sec = 60};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout);

  const char *names[] = {"CNI_COMMAND", "CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME", "CNI_ARGS", "CNI_PATH"};
  for (size_t i = 0; i < sizeof names / sizeof *names; i++) {
    const char *value = getenv(names[i]);
    if (send_field(fd, value ? value : "", value ? strlen(value) : 0)) return fail(config, CNI_ERR_IO, "sending to the agent failed");
  }
  if (send_field(fd, config, config_length)) return fail(config, CNI_ERR_IO, "sending to the agent failed");

  uint32_t header[2];
  if (read_all(fd, header, sizeof header)) return fail(config, CNI_ERR_TRY_AGAIN, "the flb-mesh CNI agent closed the connection without an answer");
  uint32_t code = ntohl(header[0]);
  uint32_t length = ntohl(header[1]);
  if (length > MAX_STDIN) return fail(config, CNI_ERR_IO, "the agent's answer is too large");
  char *out = malloc(length + 1);
  if (!out || read_all(fd, out, length)) return fail(config, CNI_ERR_IO, "reading the agent's answer failed");
  write_all(1, out, length);
  close(fd);
  return (int)code;
}
