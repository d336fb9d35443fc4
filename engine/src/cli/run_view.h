// Reading one run back from the store for the query verbs.
#ifndef CRUCIBLE_CLI_RUN_VIEW_H_
#define CRUCIBLE_CLI_RUN_VIEW_H_

#include <memory>
#include <string>

#include "cli/views.h"
#include "common/result.h"
#include "store/store.h"

namespace crucible::cli {

/// The run (by id or unique prefix) with its steps and outputs.
Result<RunView> LoadRunView(const store::Store& store, const std::string& id_or_prefix);

/// Opens the store of `state_dir` for reading; kNotFound (and nothing created)
/// when it holds no database yet.
Result<std::unique_ptr<store::Store>> OpenExistingStore(const std::string& state_dir);

}  // namespace crucible::cli

#endif  // CRUCIBLE_CLI_RUN_VIEW_H_
