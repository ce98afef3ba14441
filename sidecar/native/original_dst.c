// Reads the original destination of a connection that iptables REDIRECT (or, under eBPF mode, a
// cgroup/getsockopt program) sent to the sidecar: Node has no binding for getsockopt. This is the
// form for a socket Node accepted (the forwarder reads it itself, see forwarder.c).
#include <arpa/inet.h>
#include <errno.h>
#include <linux/netfilter_ipv4.h>
#include <netinet/in.h>
#include <node_api.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>

#include "addon.h"

#ifndef IP6T_SO_ORIGINAL_DST
#define IP6T_SO_ORIGINAL_DST 80
#endif

static napi_value throw_errno(napi_env env, const char *what) {
  char message[160];
  snprintf(message, sizeof message, "%s: %s", what, strerror(errno));
  napi_throw_error(env, NULL, message);
  return NULL;
}

// originalDestination(fd) -> { address, port, family } ; throws with errno text on failure.
napi_value original_destination(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  int32_t fd;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 1 ||
      napi_get_value_int32(env, argv[0], &fd) != napi_ok) {
    napi_throw_type_error(env, NULL, "originalDestination(fd): fd must be a number");
    return NULL;
  }
  struct sockaddr_storage local;
  socklen_t len = sizeof local;
  if (getsockname(fd, (struct sockaddr *)&local, &len) != 0) return throw_errno(env, "getsockname");

  struct sockaddr_storage original;
  memset(&original, 0, sizeof original);
  len = sizeof original;
  char text[INET6_ADDRSTRLEN];
  uint16_t port;
  int family;
  if (local.ss_family == AF_INET6) {
    struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)&original;
    // A v4 connection accepted on a dual-stack socket keeps its conntrack entry in the IPv4 table.
    if (getsockopt(fd, SOL_IPV6, IP6T_SO_ORIGINAL_DST, &original, &len) == 0) {
      inet_ntop(AF_INET6, &a6->sin6_addr, text, sizeof text);
      port = ntohs(a6->sin6_port);
      family = 6;
      if (IN6_IS_ADDR_V4MAPPED(&a6->sin6_addr)) {
        inet_ntop(AF_INET, &a6->sin6_addr.s6_addr[12], text, sizeof text);
        family = 4;
      }
    } else {
      len = sizeof original;
      if (getsockopt(fd, SOL_IP, SO_ORIGINAL_DST, &original, &len) != 0) return throw_errno(env, "getsockopt(SO_ORIGINAL_DST)");
      struct sockaddr_in *a4 = (struct sockaddr_in *)&original;
      inet_ntop(AF_INET, &a4->sin_addr, text, sizeof text);
      port = ntohs(a4->sin_port);
      family = 4;
    }
  } else {
    if (getsockopt(fd, SOL_IP, SO_ORIGINAL_DST, &original, &len) != 0) return throw_errno(env, "getsockopt(SO_ORIGINAL_DST)");
    struct sockaddr_in *a4 = (struct sockaddr_in *)&original;
    inet_ntop(AF_INET, &a4->sin_addr, text, sizeof text);
    port = ntohs(a4->sin_port);
    family = 4;
  }
  napi_value result, address, port_value, family_value;
  napi_create_object(env, &result);
  napi_create_string_utf8(env, text, NAPI_AUTO_LENGTH, &address);
  napi_create_uint32(env, port, &port_value);
  napi_create_uint32(env, (uint32_t)family, &family_value);
  napi_set_named_property(env, result, "address", address);
  napi_set_named_property(env, result, "port", port_value);
  napi_set_named_property(env, result, "family", family_value);
  return result;
}
