// The loader's bpf() calls that bpftool cannot make for us: cgroup attachment through bpf_link
// (bpftool's `cgroup attach` uses the older BPF_PROG_ATTACH), pinning and detaching those links,
// map reads and writes for per-namespace settings without a process per entry, and a network
// namespace's cookie and addresses (SO_NETNS_COOKIE, which Node cannot ask for, and getifaddrs,
// read from inside it with no process started). Raw syscalls against the kernel's UAPI header,
// so the addon needs no libbpf at run time.
//
// Nothing here parses untrusted input: paths and buffers come from the loader, and the kernel
// checks every size against the map's own.
#define _GNU_SOURCE
#include <errno.h>
#include <arpa/inet.h>
#include <fcntl.h>
#include <ifaddrs.h>
#include <linux/bpf.h>
#include <node_api.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#ifndef SO_NETNS_COOKIE
#define SO_NETNS_COOKIE 71
#endif

#define MAX_PATH 4096

static int sys_bpf(int cmd, union bpf_attr *attr) { return (int)syscall(__NR_bpf, cmd, attr, sizeof *attr); }

static napi_value throw_errno(napi_env env, const char *what, const char *path) {
  char message[MAX_PATH + 256];
  int saved = errno;
  snprintf(message, sizeof message, "%s %s: %s", what, path, strerror(saved));
  napi_value error, text, code;
  napi_create_string_utf8(env, message, NAPI_AUTO_LENGTH, &text);
  napi_create_error(env, NULL, text, &error);
  napi_create_int32(env, saved, &code);
  napi_set_named_property(env, error, "errno", code);
  napi_throw(env, error);
  return NULL;
}

static int get_args(napi_env env, napi_callback_info info, size_t want, napi_value *argv, const char *usage) {
  size_t argc = want;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < want) {
    napi_throw_type_error(env, NULL, usage);
    return -1;
  }
  return 0;
}

static int get_string(napi_env env, napi_value value, char *out, size_t size, const char *usage) {
  size_t length;
  if (napi_get_value_string_utf8(env, value, out, size, &length) != napi_ok || length == 0 || length >= size - 1) {
    napi_throw_type_error(env, NULL, usage);
    return -1;
  }
  return 0;
}

static int get_buffer(napi_env env, napi_value value, void **data, size_t *length, const char *usage) {
  bool is_buffer = false;
  if (napi_is_buffer(env, value, &is_buffer) != napi_ok || !is_buffer || napi_get_buffer_info(env, value, data, length) != napi_ok) {
    napi_throw_type_error(env, NULL, usage);
    return -1;
  }
  return 0;
}

static int obj_get(const char *path) {
  union bpf_attr attr;
  memset(&attr, 0, sizeof attr);
  attr.pathname = (__u64)(unsigned long)path;
  return sys_bpf(BPF_OBJ_GET, &attr);
}

static const struct {
  const char *name;
  enum bpf_attach_type type;
} ATTACH_TYPES[] = {
    {"connect4", BPF_CGROUP_INET4_CONNECT},       {"connect6", BPF_CGROUP_INET6_CONNECT},
    {"sockops", BPF_CGROUP_SOCK_OPS},             {"getsockopt", BPF_CGROUP_GETSOCKOPT},
    {"getpeername4", BPF_CGROUP_INET4_GETPEERNAME}, {"getpeername6", BPF_CGROUP_INET6_GETPEERNAME},
    {"sendmsg4", BPF_CGROUP_UDP4_SENDMSG},         {"sendmsg6", BPF_CGROUP_UDP6_SENDMSG},
    {"recvmsg4", BPF_CGROUP_UDP4_RECVMSG},         {"recvmsg6", BPF_CGROUP_UDP6_RECVMSG},
};

// attachCgroup(programPin, cgroupPath, attachType, linkPin): a bpf_link from the pinned program to
// the cgroup, pinned at linkPin. Cgroup links always coexist with other programs (the kernel
// attaches them as BPF_F_ALLOW_MULTI); removing the pin (or detachLink) detaches it.
static napi_value attach_cgroup(napi_env env, napi_callback_info info) {
  static const char usage[] = "attachCgroup(programPin, cgroupPath, attachType, linkPin): strings";
  napi_value argv[4];
  char program_pin[MAX_PATH], cgroup_path[MAX_PATH], attach_name[32], link_pin[MAX_PATH];
  if (get_args(env, info, 4, argv, usage) || get_string(env, argv[0], program_pin, sizeof program_pin, usage) ||
      get_string(env, argv[1], cgroup_path, sizeof cgroup_path, usage) || get_string(env, argv[2], attach_name, sizeof attach_name, usage) ||
      get_string(env, argv[3], link_pin, sizeof link_pin, usage))
    return NULL;
  int attach_type = -1;
  for (size_t i = 0; i < sizeof ATTACH_TYPES / sizeof ATTACH_TYPES[0]; i++)
    if (strcmp(ATTACH_TYPES[i].name, attach_name) == 0) attach_type = (int)ATTACH_TYPES[i].type;
  if (attach_type < 0) {
    napi_throw_type_error(env, NULL, "attachCgroup: unknown attach type");
    return NULL;
  }

  int program = obj_get(program_pin);
  if (program < 0) return throw_errno(env, "opening the pinned program", program_pin);
  int cgroup = open(cgroup_path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (cgroup < 0) {
    close(program);
    return throw_errno(env, "opening the cgroup", cgroup_path);
  }
  union bpf_attr attr;
  memset(&attr, 0, sizeof attr);
  attr.link_create.prog_fd = (__u32)program;
  attr.link_create.target_fd = (__u32)cgroup;
  attr.link_create.attach_type = (__u32)attach_type;
  int link = sys_bpf(BPF_LINK_CREATE, &attr);
  int saved = errno;
  close(program);
  close(cgroup);
  if (link < 0) {
    errno = saved;
    return throw_errno(env, "attaching (bpf_link) to the cgroup", cgroup_path);
  }
  memset(&attr, 0, sizeof attr);
  attr.bpf_fd = (__u32)link;
  attr.pathname = (__u64)(unsigned long)link_pin;
  int pinned = sys_bpf(BPF_OBJ_PIN, &attr);
  saved = errno;
  close(link);  // Unpinned, closing it detaches: nothing is left half-attached.
  if (pinned < 0) {
    errno = saved;
    return throw_errno(env, "pinning the link at", link_pin);
  }
  return NULL;
}

// detachLink(linkPin): detaches the pinned link now, even if another process holds it open.
static napi_value detach_link(napi_env env, napi_callback_info info) {
  static const char usage[] = "detachLink(linkPin): a string";
  napi_value argv[1];
  char link_pin[MAX_PATH];
  if (get_args(env, info, 1, argv, usage) || get_string(env, argv[0], link_pin, sizeof link_pin, usage)) return NULL;
  int link = obj_get(link_pin);
  if (link < 0) return throw_errno(env, "opening the pinned link", link_pin);
  union bpf_attr attr;
  memset(&attr, 0, sizeof attr);
  attr.link_detach.link_fd = (__u32)link;
  int detached = sys_bpf(BPF_LINK_DETACH, &attr);
  int saved = errno;
  close(link);
  if (detached < 0) {
    errno = saved;
    return throw_errno(env, "detaching the link", link_pin);
  }
  return NULL;
}

// mapUpdate(mapPin, key, value): creates or replaces the entry.
static napi_value map_update(napi_env env, napi_callback_info info) {
  static const char usage[] = "mapUpdate(mapPin, key, value): a string and two Buffers";
  napi_value argv[3];
  char map_pin[MAX_PATH];
  void *key, *value;
  size_t key_length, value_length;
  if (get_args(env, info, 3, argv, usage) || get_string(env, argv[0], map_pin, sizeof map_pin, usage) ||
      get_buffer(env, argv[1], &key, &key_length, usage) || get_buffer(env, argv[2], &value, &value_length, usage))
    return NULL;
  int map = obj_get(map_pin);
  if (map < 0) return throw_errno(env, "opening the pinned map", map_pin);
  union bpf_attr attr;
  memset(&attr, 0, sizeof attr);
  attr.map_fd = (__u32)map;
  attr.key = (__u64)(unsigned long)key;
  attr.value = (__u64)(unsigned long)value;
  attr.flags = BPF_ANY;
  int updated = sys_bpf(BPF_MAP_UPDATE_ELEM, &attr);
  int saved = errno;
  close(map);
  if (updated < 0) {
    errno = saved;
    return throw_errno(env, "writing an entry of", map_pin);
  }
  return NULL;
}

// mapDelete(mapPin, key) -> whether there was such an entry.
static napi_value map_delete(napi_env env, napi_callback_info info) {
  static const char usage[] = "mapDelete(mapPin, key): a string and a Buffer";
  napi_value argv[2];
  char map_pin[MAX_PATH];
  void *key;
  size_t key_length;
  if (get_args(env, info, 2, argv, usage) || get_string(env, argv[0], map_pin, sizeof map_pin, usage) ||
      get_buffer(env, argv[1], &key, &key_length, usage))
    return NULL;
  int map = obj_get(map_pin);
  if (map < 0) return throw_errno(env, "opening the pinned map", map_pin);
  union bpf_attr attr;
  memset(&attr, 0, sizeof attr);
  attr.map_fd = (__u32)map;
  attr.key = (__u64)(unsigned long)key;
  int deleted = sys_bpf(BPF_MAP_DELETE_ELEM, &attr);
  int saved = errno;
  close(map);
  if (deleted < 0 && saved != ENOENT) {
    errno = saved;
    return throw_errno(env, "deleting an entry of", map_pin);
  }
  napi_value result;
  napi_get_boolean(env, deleted == 0, &result);
  return result;
}

// mapKeys(mapPin, keySize) -> Buffer[]: every key, for removing one namespace's entries.
static napi_value map_keys(napi_env env, napi_callback_info info) {
  static const char usage[] = "mapKeys(mapPin, keySize): a string and a size from 1 to 512";
  napi_value argv[2];
  char map_pin[MAX_PATH];
  uint32_t key_size;
  if (get_args(env, info, 2, argv, usage) || get_string(env, argv[0], map_pin, sizeof map_pin, usage)) return NULL;
  if (napi_get_value_uint32(env, argv[1], &key_size) != napi_ok || key_size == 0 || key_size > 512) {
    napi_throw_type_error(env, NULL, usage);
    return NULL;
  }
  int map = obj_get(map_pin);
  if (map < 0) return throw_errno(env, "opening the pinned map", map_pin);
  unsigned char previous[512], next[512];
  napi_value result;
  napi_create_array(env, &result);
  uint32_t count = 0;
  for (int first = 1;; first = 0) {
    union bpf_attr attr;
    memset(&attr, 0, sizeof attr);
    attr.map_fd = (__u32)map;
    attr.key = first ? 0 : (__u64)(unsigned long)previous;
    attr.next_key = (__u64)(unsigned long)next;
    if (sys_bpf(BPF_MAP_GET_NEXT_KEY, &attr) < 0) {
      int saved = errno;
      close(map);
      if (saved == ENOENT) return result;
      errno = saved;
      return throw_errno(env, "listing the keys of", map_pin);
    }
    napi_value key;
    void *copy;
    napi_create_buffer_copy(env, key_size, next, &copy, &key);
    napi_set_element(env, result, count++, key);
    memcpy(previous, next, key_size);
  }
}

#define MAX_ADDRESSES 256

// netnsInfo(netnsPath) -> { cookie: bigint, addresses: string[] }: the cookie BPF programs see for
// that network namespace (SO_NETNS_COOKIE) and the addresses of its interfaces (getifaddrs), both
// read from inside it: setns() moves only the calling thread, for the length of this synchronous
// call. No process is started.
static napi_value netns_info(napi_env env, napi_callback_info info) {
  static const char usage[] = "netnsInfo(netnsPath): a string";
  napi_value argv[1];
  char path[MAX_PATH];
  if (get_args(env, info, 1, argv, usage) || get_string(env, argv[0], path, sizeof path, usage)) return NULL;
  int own = open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC);
  if (own < 0) return throw_errno(env, "opening", "/proc/thread-self/ns/net");
  int target = open(path, O_RDONLY | O_CLOEXEC);
  if (target < 0) {
    close(own);
    return throw_errno(env, "opening the network namespace", path);
  }
  if (setns(target, CLONE_NEWNET) != 0) {
    int saved = errno;
    close(own);
    close(target);
    errno = saved;
    return throw_errno(env, "entering the network namespace", path);
  }
  close(target);

  const char *failed = NULL;
  int saved = 0;
  uint64_t cookie = 0;
  int sock = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  socklen_t length = sizeof cookie;
  if (sock < 0 || getsockopt(sock, SOL_SOCKET, SO_NETNS_COOKIE, &cookie, &length) != 0) {
    saved = errno;
    failed = "reading the cookie (SO_NETNS_COOKIE, Linux 5.14+) of";
  }
  if (sock >= 0) close(sock);
  char addresses[MAX_ADDRESSES][INET6_ADDRSTRLEN];
  size_t count = 0;
  struct ifaddrs *interfaces = NULL;
  if (!failed && getifaddrs(&interfaces) != 0) {
    saved = errno;
    failed = "listing the addresses of";
  }
  for (struct ifaddrs *i = interfaces; i && count < MAX_ADDRESSES; i = i->ifa_next) {
    if (!i->ifa_addr) continue;
    if (i->ifa_addr->sa_family == AF_INET)
      inet_ntop(AF_INET, &((struct sockaddr_in *)i->ifa_addr)->sin_addr, addresses[count++], INET6_ADDRSTRLEN);
    else if (i->ifa_addr->sa_family == AF_INET6)
      inet_ntop(AF_INET6, &((struct sockaddr_in6 *)i->ifa_addr)->sin6_addr, addresses[count++], INET6_ADDRSTRLEN);
  }
  if (interfaces) freeifaddrs(interfaces);

  if (setns(own, CLONE_NEWNET) != 0) {
    // The main thread stuck in a pod's namespace would make every later socket wrong.
    fprintf(stderr, "flb bpf: could not return to the original network namespace: %s\n", strerror(errno));
    abort();
  }
  close(own);
  if (failed) {
    errno = saved;
    return throw_errno(env, failed, path);
  }
  napi_value result, cookie_value, list;
  napi_create_object(env, &result);
  napi_create_bigint_uint64(env, cookie, &cookie_value);
  napi_create_array_with_length(env, count, &list);
  for (size_t i = 0; i < count; i++) {
    napi_value text;
    napi_create_string_utf8(env, addresses[i], NAPI_AUTO_LENGTH, &text);
    napi_set_element(env, list, (uint32_t)i, text);
  }
  napi_set_named_property(env, result, "cookie", cookie_value);
  napi_set_named_property(env, result, "addresses", list);
  return result;
}

NAPI_MODULE_INIT() {
  napi_property_descriptor properties[] = {
      {"attachCgroup", NULL, attach_cgroup, NULL, NULL, NULL, napi_enumerable, NULL},
      {"detachLink", NULL, detach_link, NULL, NULL, NULL, napi_enumerable, NULL},
      {"mapUpdate", NULL, map_update, NULL, NULL, NULL, napi_enumerable, NULL},
      {"mapDelete", NULL, map_delete, NULL, NULL, NULL, napi_enumerable, NULL},
      {"mapKeys", NULL, map_keys, NULL, NULL, NULL, napi_enumerable, NULL},
      {"netnsInfo", NULL, netns_info, NULL, NULL, NULL, napi_enumerable, NULL},
  };
  napi_define_properties(env, exports, sizeof properties / sizeof properties[0], properties);
  return exports;
}
