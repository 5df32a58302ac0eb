// `weft topo [--probe] [--json]`: run on every rank of a job (`weft run -n 4 -- weft topo`, or
// under mpirun); rank 0 prints the hosts, each rank's host and local rank, the transport chosen
// for every pair and, with --probe or WEFT_PROBE_LINKS=1, the measured α/β of every link class.
#pragma once

#include <string>
#include <vector>

namespace weft::runtime {

// Parses the arguments after "topo" and runs; returns the process exit code (2 for usage errors,
// 1 when the communicator or a gather fails).
int TopoCommand(const std::vector<std::string>& args);

}  // namespace weft::runtime
