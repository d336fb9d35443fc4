/* Fixture plugins for the loader's failure paths: one table, bent per FIXTURE_CASE_*. */
#include <stddef.h>
#include <string.h>

#include "crucible/backend_abi.h"

#define EXPORT __attribute__((visibility("default")))
#define MAYBE_UNUSED __attribute__((unused))

MAYBE_UNUSED static void* Create(const crucible_host* host, const crucible_option_value* options, size_t options_len, char* err,
                    size_t err_cap) {
  (void)host;
  (void)options;
  (void)options_len;
  (void)err;
  (void)err_cap;
  return NULL;
}
MAYBE_UNUSED static void Destroy(void* backend) { (void)backend; }
MAYBE_UNUSED static int64_t Capacity(void* backend) {
  (void)backend;
  return -1;
}
MAYBE_UNUSED static crucible_status Start(void* backend, const crucible_attempt_launch* launch, char* handle, size_t handle_cap,
                             char* err, size_t err_cap) {
  (void)backend;
  (void)launch;
  (void)handle;
  (void)handle_cap;
  (void)err;
  (void)err_cap;
  return CRUCIBLE_STATUS_ERROR;
}
MAYBE_UNUSED static int Poll(void* backend, int timeout_ms, const crucible_result_sink* sink) {
  (void)backend;
  (void)timeout_ms;
  (void)sink;
  return 0;
}
MAYBE_UNUSED static crucible_status Cancel(void* backend, uint64_t attempt_key, int64_t grace_ms) {
  (void)backend;
  (void)attempt_key;
  (void)grace_ms;
  return CRUCIBLE_STATUS_OK;
}

#if defined(FIXTURE_CASE_bad_options)
static const crucible_option_decl kOptions[] = {
    {sizeof(crucible_option_decl), "region", CRUCIBLE_OPTION_STRING, CRUCIBLE_SCOPE_BACKEND, 0, NULL},
    {sizeof(crucible_option_decl), "region", CRUCIBLE_OPTION_INT, CRUCIBLE_SCOPE_BACKEND, 0, NULL},
};
#define OPTIONS kOptions
#define OPTIONS_LEN 2
#else
#define OPTIONS NULL
#define OPTIONS_LEN 0
#endif

#if defined(FIXTURE_CASE_missing_dep)
int crucible_fixture_gone_value(void);
EXPORT int crucible_fixture_use_gone(void) { return crucible_fixture_gone_value(); }
#endif

MAYBE_UNUSED static crucible_backend_api MakeTable(void) {
  crucible_backend_api api;
  memset(&api, 0, sizeof api);
  api.struct_size = sizeof api;
  api.abi_major = CRUCIBLE_ABI_MAJOR;
  api.abi_minor = CRUCIBLE_ABI_MINOR;
  api.name = FIXTURE_NAME;
  api.version = "0.0.1";
  api.description = "a loader fixture";
  api.options = OPTIONS;
  api.options_len = OPTIONS_LEN;
  api.create = Create;
  api.destroy = Destroy;
  api.capacity = Capacity;
  api.start = Start;
  api.poll = Poll;
  api.cancel = Cancel;
#if defined(FIXTURE_CASE_abi_major)
  api.abi_major = 1;
  api.abi_minor = 0;
#elif defined(FIXTURE_CASE_small_struct)
  api.struct_size = offsetof(crucible_backend_api, create);
#elif defined(FIXTURE_CASE_null_function)
  api.poll = NULL;
#elif defined(FIXTURE_CASE_bad_name)
  api.name = "Bad Name";
#elif defined(FIXTURE_CASE_duplicate)
  api.name = "echo";
#endif
  return api;
}

MAYBE_UNUSED static crucible_backend_api g_api;

#if defined(FIXTURE_CASE_no_symbol)
/* Built for a future ABI: exports the v1 symbol only. */
EXPORT const crucible_backend_api* crucible_backend_api_v1(void) {
  g_api = MakeTable();
  return &g_api;
}
#elif defined(FIXTURE_CASE_null_entry)
EXPORT const crucible_backend_api* crucible_backend_api_v0(void) { return NULL; }
#else
EXPORT const crucible_backend_api* crucible_backend_api_v0(void) {
  g_api = MakeTable();
  return &g_api;
}
#endif
