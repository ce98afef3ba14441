// The sidecar's native addon: one shared object, Node-API only (plus libuv, which Node exports,
// for the forwarder's place in the event loop).
#pragma once
#include <node_api.h>

napi_value original_destination(napi_env env, napi_callback_info info);
napi_value create_forwarder(napi_env env, napi_callback_info info);
