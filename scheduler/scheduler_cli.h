// The scheduler's `weft` subcommands: scheduler, agent, submit, jobs, job, cancel, watch, nodes.
// runtime/weft_main.cc dispatches to SchedulerCliMain() when built with WEFT_WITH_GRPC.
#pragma once

#include <cstdio>
#include <string>
#include <vector>

namespace weft::scheduler {

// Runs `weft <command> args...` when `command` is one of the scheduler's and returns its exit
// code; sets *handled = false (and returns 2) for any other command. Exit codes: 0 success,
// 1 the operation failed (the message names why), 2 usage errors; `weft watch` and
// `weft submit --wait` return 0 only when the job SUCCEEDED.
int SchedulerCliMain(const std::string& command, const std::vector<std::string>& args,
                     bool* handled);

// The usage lines for `weft help`.
void PrintSchedulerUsage(FILE* out);

}  // namespace weft::scheduler
