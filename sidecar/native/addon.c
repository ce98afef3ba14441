#include "addon.h"

NAPI_MODULE_INIT() {
  napi_value fn;
  napi_create_function(env, "originalDestination", NAPI_AUTO_LENGTH, original_destination, NULL, &fn);
  napi_set_named_property(env, exports, "originalDestination", fn);
  napi_create_function(env, "createForwarder", NAPI_AUTO_LENGTH, create_forwarder, NULL, &fn);
  napi_set_named_property(env, exports, "createForwarder", fn);
  return exports;
}
