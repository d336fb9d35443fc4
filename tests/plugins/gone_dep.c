/* A library the missing_dep fixture links, placed where the loader cannot find it. */
int crucible_fixture_gone_value(void) { return 42; }
