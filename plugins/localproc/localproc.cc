#include "crucible/backend_sdk.hpp"
