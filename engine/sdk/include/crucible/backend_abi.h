/*
 * crucible-engine backend plugin ABI.
 *
 * The only contract between the engine and a backend plugin. Pure C99, so a
 * plugin may be built with any compiler and standard library.
 *
 * Versioning:
 *   - The major version is part of the entry symbol's name
 *     (crucible_backend_api_v0). A breaking change renames the symbol.
 *   - The minor version is carried in the table; members are only ever
 *     appended, and every struct starts with its own struct_size so either
 *     side can tell which members the other knows.
 *   - In every enum the value 0 is ..._UNSET, so zeroed memory never reads as
 *     success.
 *
 * Threading: the engine calls every function of a backend instance from one
 * thread (its scheduler thread). A plugin may use threads internally; the only
 * host function it may call from any thread is crucible_host.wake.
 *
 * Errors: a function that can fail returns crucible_status and writes a
 * NUL-terminated message into the caller's buffer (truncated to its capacity).
 * No C++ exception may cross this boundary (the C++ SDK catches them all).
 */
#ifndef CRUCIBLE_BACKEND_ABI_H_
#define CRUCIBLE_BACKEND_ABI_H_

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define CRUCIBLE_ABI_MAJOR 0
#define CRUCIBLE_ABI_MINOR 2

/* Name of the one symbol a plugin exports. Its type is crucible_backend_entry_fn. */
#define CRUCIBLE_BACKEND_ENTRY_SYMBOL "crucible_backend_api_v0"

/* Capacity of the buffers the engine hands to plugins for messages and handles. */
#define CRUCIBLE_MESSAGE_CAP 1024
#define CRUCIBLE_HANDLE_CAP 512

typedef enum crucible_status {
  CRUCIBLE_STATUS_UNSET = 0,
  CRUCIBLE_STATUS_OK = 1,
  CRUCIBLE_STATUS_ERROR = 2,       /* the call failed; see the message */
  CRUCIBLE_STATUS_UNSUPPORTED = 3, /* this backend does not implement the call */
  CRUCIBLE_STATUS_UNAVAILABLE = 4  /* the substrate cannot be reached now (infrastructure) */
} crucible_status;

/* ---------------------------------------------------------------------------
 * Options a plugin declares; the engine validates [backends.NAME] and
 * [steps.NAME] tables against them before any plugin code runs.
 * ------------------------------------------------------------------------- */

typedef enum crucible_option_type {
  CRUCIBLE_OPTION_UNSET = 0,
  CRUCIBLE_OPTION_STRING = 1,
  CRUCIBLE_OPTION_INT = 2,
  CRUCIBLE_OPTION_BOOL = 3,
  CRUCIBLE_OPTION_FLOAT = 4,       /* an integer is accepted too */
  CRUCIBLE_OPTION_DURATION = 5,    /* "30s", "1h30m" or integer seconds; delivered as int_value in ms */
  CRUCIBLE_OPTION_STRING_LIST = 6,
  CRUCIBLE_OPTION_STRING_MAP = 7   /* a table of strings */
} crucible_option_type;

typedef enum crucible_option_scope {
  CRUCIBLE_SCOPE_UNSET = 0,
  CRUCIBLE_SCOPE_BACKEND = 1, /* [backends.NAME] */
  CRUCIBLE_SCOPE_STEP = 2     /* [steps.NAME] inside a step, or [defaults.NAME] */
} crucible_option_scope;

typedef struct crucible_option_decl {
  size_t struct_size;
  /* OWNERSHIP: plugin, static. LIFETIME: while the library is loaded. */
  const char* name;
  crucible_option_type type;
  crucible_option_scope scope;
  int required; /* non-zero: must be given */
  /* OWNERSHIP: plugin, static. LIFETIME: while the library is loaded. May be NULL. */
  const char* description;
} crucible_option_decl;

typedef struct crucible_kv {
  /* OWNERSHIP: caller. LIFETIME: the duration of the call that received it. */
  const char* key;
  /* OWNERSHIP: caller. LIFETIME: the duration of the call that received it. */
  const char* value;
} crucible_kv;

/* One validated option value. Only the members matching `type` are set. */
typedef struct crucible_option_value {
  size_t struct_size;
  /* OWNERSHIP: engine. LIFETIME: the duration of the call that received it. */
  const char* name;
  crucible_option_type type;
  /* STRING. OWNERSHIP: engine. LIFETIME: the duration of the call. */
  const char* string_value;
  int64_t int_value; /* INT, BOOL (0/1), DURATION (milliseconds) */
  double float_value; /* FLOAT */
  /* STRING_LIST. OWNERSHIP: engine. LIFETIME: the duration of the call. */
  const char* const* list;
  size_t list_len;
  /* STRING_MAP. OWNERSHIP: engine. LIFETIME: the duration of the call. */
  const crucible_kv* map;
  size_t map_len;
} crucible_option_value;

/* ---------------------------------------------------------------------------
 * The host: what the engine offers a backend instance.
 * ------------------------------------------------------------------------- */

typedef enum crucible_log_level {
  CRUCIBLE_LOG_UNSET = 0,
  CRUCIBLE_LOG_DEBUG = 1,
  CRUCIBLE_LOG_INFO = 2,
  CRUCIBLE_LOG_WARN = 3,
  CRUCIBLE_LOG_ERROR = 4
} crucible_log_level;

typedef struct crucible_host {
  size_t struct_size;
  /* OWNERSHIP: engine. LIFETIME: until destroy returns. Pass back to the functions below. */
  void* ctx;
  /* Tells the engine that poll() has something to hand back. Safe from any thread, any time. */
  void (*wake)(void* ctx);
  /* Writes one line to the engine's log under the plugin's name. Scheduler thread only. */
  void (*log)(void* ctx, crucible_log_level level, const char* message);
  /* OWNERSHIP: engine. LIFETIME: until destroy returns. The state directory (absolute). */
  const char* state_dir;
  /* OWNERSHIP: engine. LIFETIME: until destroy returns. The run this instance serves. */
  const char* run_id;
  /* Minor 2. An eventfd the engine waits on: writing an 8-byte 1 to it wakes the
   * engine as wake() does, from any thread or any process the plugin hands it to.
   * OWNERSHIP: engine (dup it to keep it). LIFETIME: until destroy returns. <= 0: none. */
  int wake_fd;
} crucible_host;

/* ---------------------------------------------------------------------------
 * One attempt of one step instance.
 * ------------------------------------------------------------------------- */

typedef struct crucible_input_file {
  /* OWNERSHIP: engine. LIFETIME: the start() call. Absolute path of a regular file. */
  const char* source;
  /* OWNERSHIP: engine. LIFETIME: the start() call. Relative destination inside the working directory. */
  const char* dest;
} crucible_input_file;

typedef struct crucible_attempt_launch {
  size_t struct_size;
  uint64_t attempt_key; /* engine-chosen, unique within the engine process; names the attempt in poll/cancel */
  /* OWNERSHIP: engine. LIFETIME: the start() call (copy what you keep). */
  const char* run_id;
  const char* step_id; /* instance id, e.g. evaluate[alice] */
  uint32_t attempt;    /* 1-based */
  /* argv: argc strings. For a `shell` step the engine passes ["/bin/sh", "-c", script]. */
  const char* const* argv;
  size_t argc;
  /* Environment the workflow gives the step, CRUCIBLE_* included; CRUCIBLE_OUTPUT and
   * CRUCIBLE_UPSTREAM are set by the backend, which knows where the working directory is. */
  const crucible_kv* env;
  size_t env_len;
  const crucible_input_file* inputs;
  size_t inputs_len;
  /* JSON for the CRUCIBLE_UPSTREAM file, NULL when the step has no needs. */
  const char* upstream_json;
  /* Where the backend may create this attempt's working directory (absolute, does not exist yet). */
  const char* work_dir;
  /* Where the attempt's captured stdout and stderr go (absolute; parent exists). */
  const char* log_path;
  uint64_t log_cap_bytes;    /* keep at most this many bytes of output */
  uint64_t output_cap_bytes; /* read at most this many bytes of CRUCIBLE_OUTPUT (engine checks the cap) */
  int64_t timeout_ms;        /* 0: none */
  int64_t cpu_millicores;    /* 0: unlimited */
  int64_t memory_bytes;      /* 0: unlimited */
  int keep_work;             /* non-zero: leave the working directory after the attempt */
  /* OWNERSHIP: engine. LIFETIME: the start() call. Empty when absent. */
  const char* image;
  /* Validated [steps.NAME] options for this backend. */
  const crucible_option_value* step_options;
  size_t step_options_len;
} crucible_attempt_launch;

typedef enum crucible_outcome {
  CRUCIBLE_OUTCOME_UNSET = 0,
  CRUCIBLE_OUTCOME_SUCCEEDED = 1,
  CRUCIBLE_OUTCOME_FAILED = 2,
  CRUCIBLE_OUTCOME_CANCELLED = 3
} crucible_outcome;

typedef enum crucible_reason {
  CRUCIBLE_REASON_UNSET = 0,
  CRUCIBLE_REASON_NONE = 1,          /* succeeded */
  CRUCIBLE_REASON_EXITED = 2,        /* non-zero exit */
  CRUCIBLE_REASON_TIMEOUT = 3,
  CRUCIBLE_REASON_OOM_KILLED = 4,
  CRUCIBLE_REASON_CANCELLED = 5,
  CRUCIBLE_REASON_BACKEND_ERROR = 6, /* infrastructure: retried without charging `retries` */
  CRUCIBLE_REASON_LOST = 7,          /* infrastructure: the process/container/pod vanished */
  CRUCIBLE_REASON_SIGNALED = 8       /* killed by a signal it did not get from us */
} crucible_reason;

typedef struct crucible_attempt_result {
  size_t struct_size;
  uint64_t attempt_key;
  crucible_outcome outcome;
  crucible_reason reason;
  int exit_code;       /* -1 when the process did not exit normally */
  int signal;          /* 0 when none */
  int64_t started_at_ms; /* unix epoch milliseconds */
  int64_t ended_at_ms;
  uint64_t log_bytes_kept;
  uint64_t log_bytes_dropped;
  /* Raw text of CRUCIBLE_OUTPUT (up to output_cap_bytes + 1 bytes), NULL if none.
   * OWNERSHIP: plugin. LIFETIME: the sink call. */
  const char* outputs_text;
  size_t outputs_len;
  /* For the user. OWNERSHIP: plugin. LIFETIME: the sink call. May be NULL. */
  const char* message;
} crucible_attempt_result;

/* poll() hands each finished attempt to this sink, on the calling thread. */
typedef struct crucible_result_sink {
  void* ctx;
  void (*on_result)(void* ctx, const crucible_attempt_result* result);
} crucible_result_sink;

/* check_step(): one step as validation sees it, before anything runs. */
typedef struct crucible_step_check {
  size_t struct_size;
  /* OWNERSHIP: engine. LIFETIME: the call. */
  const char* step_id;
  const char* image; /* empty when absent */
  int64_t cpu_millicores;
  int64_t memory_bytes;
  int64_t timeout_ms;
  const crucible_option_value* backend_options; /* [backends.NAME] */
  size_t backend_options_len;
  const crucible_option_value* step_options; /* [steps.NAME] */
  size_t step_options_len;
} crucible_step_check;

typedef enum crucible_severity {
  CRUCIBLE_SEVERITY_UNSET = 0,
  CRUCIBLE_SEVERITY_WARNING = 1,
  CRUCIBLE_SEVERITY_ERROR = 2
} crucible_severity;

/* check_step() reports each finding here. `field` is the step key it concerns
 * ("image", "resources.memory", "kubernetes.node_selector", or "" for the step). */
typedef struct crucible_diag_sink {
  void* ctx;
  void (*report)(void* ctx, crucible_severity severity, const char* field, const char* message);
} crucible_diag_sink;

/* One attempt of a run recorded as running, for adopt(). Minor 2 gave it
 * struct_size (the array's stride) and the step and attempt, which name the
 * attempt even when its handle was never recorded (the engine died between
 * start() and the record). */
typedef struct crucible_adopt_item {
  size_t struct_size;
  uint64_t attempt_key; /* the key the engine now uses for this attempt */
  /* OWNERSHIP: engine. LIFETIME: the call. The text start() returned; "" when never recorded. */
  const char* handle;
  /* OWNERSHIP: engine. LIFETIME: the call. */
  const char* step_id;
  uint32_t attempt;
} crucible_adopt_item;

/* ---------------------------------------------------------------------------
 * The table a plugin returns.
 * ------------------------------------------------------------------------- */

typedef struct crucible_backend_api {
  size_t struct_size;
  uint32_t abi_major; /* CRUCIBLE_ABI_MAJOR the plugin was built with */
  uint32_t abi_minor;
  /* OWNERSHIP: plugin, static. LIFETIME: while loaded. [a-z][a-z0-9_-]* */
  const char* name;
  const char* version; /* semver */
  const char* description;
  const crucible_option_decl* options;
  size_t options_len;

  /* Facts about this machine for `plugins` and `validate` (for example what
   * cannot be enforced here). Writes a NUL-terminated text into buf. May be NULL. */
  void (*describe)(char* buf, size_t cap);

  /* Findings for one step at validate time; contacts nothing. May be NULL. */
  crucible_status (*check_step)(const crucible_step_check* step, const crucible_diag_sink* sink);

  /* One instance per run. Returns NULL on failure with a message in err. */
  void* (*create)(const crucible_host* host, const crucible_option_value* options, size_t options_len,
                  char* err, size_t err_cap);
  /* Stops everything this instance started that is still running, then frees it. */
  void (*destroy)(void* backend);

  /* How many more attempts it accepts now; negative: no limit of its own. */
  int64_t (*capacity)(void* backend);

  /* Starts one attempt and returns at once. On OK writes a durable handle
   * (NUL-terminated) into handle; on failure a message into err. */
  crucible_status (*start)(void* backend, const crucible_attempt_launch* launch, char* handle,
                           size_t handle_cap, char* err, size_t err_cap);

  /* Hands finished attempts to the sink; waits at most timeout_ms (0: do not
   * wait) when nothing is ready. Returns how many it handed over, or -1 on error. */
  int (*poll)(void* backend, int timeout_ms, const crucible_result_sink* sink);

  /* Asks one attempt to stop (SIGTERM then SIGKILL after grace_ms, or the
   * substrate's equivalent). Its result still arrives through poll. */
  crucible_status (*cancel)(void* backend, uint64_t attempt_key, int64_t grace_ms);

  /* Follows attempts recorded by an earlier engine (items: items_len structs of
   * items[0].struct_size bytes each). Each one that is gone is reported through
   * poll as CRUCIBLE_REASON_LOST; one that ended meanwhile, with its result.
   * May be NULL: the engine then records every such attempt as lost. */
  crucible_status (*adopt)(void* backend, const crucible_adopt_item* items, size_t items_len,
                           char* err, size_t err_cap);
} crucible_backend_api;

/* The entry symbol's type. OWNERSHIP: plugin, static. LIFETIME: while loaded. */
typedef const crucible_backend_api* (*crucible_backend_entry_fn)(void);

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* CRUCIBLE_BACKEND_ABI_H_ */
