// The one file of the command line that uses CLI11 (and catches its exceptions).
#include "cli/cli.h"

#include <cstdlib>
#include <filesystem>
#include <functional>
#include <iostream>
#include <memory>

#include <CLI/CLI.hpp>
#include <spdlog/cfg/env.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include "cli/commands.h"

#ifndef CRUCIBLE_VERSION
#define CRUCIBLE_VERSION "0.0.0"
#endif

namespace crucible::cli {
namespace {

/// The state directory: --state-dir, else $CRUCIBLE_STATE_DIR, else .crucible/ here; made absolute.
std::string ResolveStateDir(const std::string& flag) {
  std::string dir = flag;
  if (dir.empty()) {
    const char* env = std::getenv("CRUCIBLE_STATE_DIR");
    dir = env != nullptr && *env != '\0' ? env : ".crucible";
  }
  std::error_code ec;
  std::filesystem::path abs = std::filesystem::absolute(dir, ec);
  return ec ? dir : abs.lexically_normal().string();
}

/// One verb of the table: its name, what it does, how it adds its options, what it runs.
struct Verb {
  const char* name;
  const char* help;
  std::function<void(CLI::App&)> add_options;
  std::function<int()> run;
};

}  // namespace

int RunCli(int argc, char** argv) {
  // The log goes to stderr with the events: stdout carries what a command
  // prints (--json among it). SPDLOG_LEVEL=debug shows the engine's and its
  // plugins' debug log.
  spdlog::set_default_logger(spdlog::stderr_color_mt("crucible"));
  spdlog::cfg::load_env_levels();
  CLI::App app{"crucible-engine: runs workflows of steps described in TOML, on pluggable backends.",
               "crucible-engine"};
  app.set_version_flag("--version", CRUCIBLE_VERSION);
  app.require_subcommand(1);
  app.fallthrough();  // --state-dir may follow the verb
  app.footer(
      "Exit codes: 0 success, 1 a step failed, 2 invalid workflow or usage, 3 backend unavailable, "
      "130 interrupted.");

  std::string state_dir_flag;
  app.add_option("--state-dir", state_dir_flag,
                 "where runs are kept (default: $CRUCIBLE_STATE_DIR, else .crucible/ here)");

  WorkflowArgs wf;
  std::vector<std::string> sets;
  LogsArgs logs;
  std::string run_id;
  bool json = false;
  int limit = 20;
  bool all_runs = false;
  PruneArgs prune;
  RetryArgs retry;
  ResumeArgs resume;
  GlobalOptions g;

  auto add_file = [&](CLI::App& c) { c.add_option("FILE", wf.file, "the workflow file")->required(); };
  auto add_plan_options = [&](CLI::App& c) {
    c.add_option("--backend", wf.backend, "default backend of the steps (overrides [workflow] backend)");
    c.add_option("--set", sets, "override a [params] value: NAME=VALUE (repeatable)")->allow_extra_args(false);
  };
  auto add_run_id = [&](CLI::App& c) { c.add_option("RUN", run_id, "a run id or a unique prefix")->required(); };
  auto add_json = [&](CLI::App& c, const char* what) { c.add_flag("--json", json, what); };

  const Verb verbs[] = {
      {"run", "run a workflow; the run id is the first line on stderr",
       [&](CLI::App& c) {
         add_file(c);
         add_plan_options(c);
         c.add_option("--max-parallel", wf.max_parallel, "steps running at once")->check(CLI::PositiveNumber);
         add_json(c, "print the final status object on stdout");
         c.add_flag("--keep-work", wf.keep_work, "keep each attempt's working directory");
       },
       [&] {
         wf.json = json;
         return CmdRun(g, wf);
       }},
      {"retry",
       "run again what failed, was skipped or was cancelled in a finished run, keeping what succeeded; uses the "
       "workflow stored with the run",
       [&](CLI::App& c) {
         c.add_option("RUN", retry.run, "a run id or a unique prefix")->required();
         c.add_option("--max-parallel", retry.max_parallel, "steps running at once")->check(CLI::PositiveNumber);
         add_json(c, "print the final status object on stdout");
         c.add_flag("--keep-work", retry.keep_work, "keep each attempt's working directory");
       },
       [&] {
         retry.json = json;
         return CmdRetry(g, retry);
       }},
      {"resume",
       "continue a run whose engine died (killed, crashed, machine restarted) from the database: finished steps "
       "are kept, running ones followed to their end or retried as lost; uses the workflow stored with the run",
       [&](CLI::App& c) {
         c.add_option("RUN", resume.run, "a run id or a unique prefix")->required();
         c.add_flag("--force", resume.force, "take over an owner whose lease expired even if its process exists");
         c.add_option("--max-parallel", resume.max_parallel, "steps running at once")->check(CLI::PositiveNumber);
         add_json(c, "print the final status object on stdout");
         c.add_flag("--keep-work", resume.keep_work, "keep each attempt's working directory");
       },
       [&] {
         resume.json = json;
         return CmdResume(g, resume);
       }},
      {"cancel",
       "cancel a run from another process: its engine stops it, or, where that engine is gone, its step "
       "processes are stopped from here",
       [&](CLI::App& c) { add_run_id(c); }, [&] { return CmdCancel(g, run_id); }},
      {"validate", "check a workflow and print its diagnostics; exit 0, 2, or 3 (backend cannot be loaded)",
       [&](CLI::App& c) {
         add_file(c);
         add_plan_options(c);
       },
       [&] { return CmdValidate(g, wf); }},
      {"graph", "print the planned DAG as Graphviz DOT",
       [&](CLI::App& c) {
         add_file(c);
         add_plan_options(c);
       },
       [&] { return CmdGraph(g, wf); }},
      {"runs", "list runs, newest first",
       [&](CLI::App& c) {
         add_json(c, "print a JSON array");
         auto* lim = c.add_option("--limit", limit, "at most this many runs (default 20)")->check(CLI::PositiveNumber);
         c.add_flag("--all", all_runs, "every run")->excludes(lim);
       },
       [&] { return CmdRuns(g, json, all_runs ? -1 : limit); }},
      {"status", "show one run, step by step",
       [&](CLI::App& c) {
         add_run_id(c);
         add_json(c, "print the status object");
       },
       [&] { return CmdStatus(g, run_id, json); }},
      {"logs", "print an attempt's captured output",
       [&](CLI::App& c) {
         c.add_option("RUN", logs.run, "a run id or a unique prefix")->required();
         c.add_option("STEP", logs.step, "a step instance id (default: every step)");
         c.add_option("--attempt", logs.attempt, "attempt number (default: the last)")->check(CLI::PositiveNumber);
         c.add_flag("--follow,-f", logs.follow, "keep printing while the attempt runs");
       },
       [&] { return CmdLogs(g, logs); }},
      {"results", "show the steps' outputs",
       [&](CLI::App& c) {
         add_run_id(c);
         add_json(c, "print {\"run_id\": ..., \"steps\": {step: {key: value}}}");
       },
       [&] { return CmdResults(g, run_id, json); }},
      {"plugins", "list the backend plugins found, and any that failed to load",
       [&](CLI::App& c) { add_json(c, "print JSON"); }, [&] { return CmdPlugins(g, json); }},
      {"prune", "delete finished runs older than a duration, with their logs and work directories",
       [&](CLI::App& c) {
         c.add_option("--older-than", prune.older_than, "a duration: 30d, 12h, 90m")->required();
         c.add_flag("--dry-run", prune.dry_run, "list what would be deleted, delete nothing");
       },
       [&] { return CmdPrune(g, prune); }},
  };

  std::vector<std::pair<CLI::App*, const Verb*>> subs;
  for (const Verb& v : verbs) {
    CLI::App* sub = app.add_subcommand(v.name, v.help);
    v.add_options(*sub);
    subs.emplace_back(sub, &v);
  }

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    int code = app.exit(e);
    return code == 0 ? kExitOk : kExitUsage;
  }

  for (const std::string& s : sets) {
    size_t eq = s.find('=');
    if (eq == std::string::npos || eq == 0) {
      std::cerr << "crucible-engine: --set wants NAME=VALUE, got \"" << s << "\"\n";
      return kExitUsage;
    }
    wf.params.emplace_back(s.substr(0, eq), s.substr(eq + 1));
  }
  g.state_dir = ResolveStateDir(state_dir_flag);

  for (const auto& [sub, verb] : subs) {
    if (sub->parsed()) return verb->run();
  }
  std::cerr << app.help();
  return kExitUsage;
}

}  // namespace crucible::cli
