// The command line of crucible-engine: verbs from a table, exit codes as the
// format says (0, 1, 2 invalid workflow or usage, 3 backend unavailable, 130).
#ifndef CRUCIBLE_CLI_CLI_H_
#define CRUCIBLE_CLI_CLI_H_

namespace crucible::cli {

/// Parses argv, runs the verb, returns the process exit code.
int RunCli(int argc, char** argv);

}  // namespace crucible::cli

#endif  // CRUCIBLE_CLI_CLI_H_
