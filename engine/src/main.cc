// crucible-engine: a thin main; everything is in the CLI library.
#include "cli/cli.h"

int main(int argc, char** argv) { return crucible::cli::RunCli(argc, argv); }
