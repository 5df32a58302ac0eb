// `weft bench COLLECTIVE`: nccl-tests-style sweeps over message sizes with algbw/busbw and
// result checking, out-of-place and in-place, run by every rank of a job (`weft run -n 4 -- weft
// bench allreduce`). Sits in runtime/ above the collectives.
#pragma once

#include <string>
#include <vector>

namespace weft::runtime {

// Parses the arguments after "bench" and runs; returns the process exit code (non-zero on a
// usage error, a failed collective, or any wrong result when checking).
int BenchCommand(const std::vector<std::string>& args);

}  // namespace weft::runtime
