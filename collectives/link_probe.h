// Link probing: measures α (latency) and β (inverse bandwidth) of every class of link in a
// communicator (same host or not, per transport) with ping-pongs between one representative pair
// per class, and gathers which transport joins each pair. Used by `weft topo --probe` and, on
// request (WEFT_PROBE_LINKS=1), by Communicator::Create, which hands the models to the tuner.
#pragma once

#include <cstddef>
#include <string>
#include <vector>

#include "base/status.h"
#include "collectives/communicator.h"
#include "collectives/link_model.h"

namespace weft::collectives {

struct ProbeOptions {
  size_t small_bytes = 8;        // latency ping-pong message
  size_t large_bytes = 4 << 20;  // bandwidth ping-pong message
  int small_iters = 200;         // timed round trips (after small_iters / 10 warm-up)
  int large_iters = 10;          // timed round trips (after 2 warm-up)
};

// Whether WEFT_PROBE_LINKS asks for probing (read once).
bool ProbeLinksRequested();

// transports[a][b]: the transport rank a uses to reach rank b ("self" on the diagonal), gathered
// from every rank. Collective over `comm`.
Result<std::vector<std::vector<std::string>>> TransportMatrix(Communicator& comm);

// Measures every link class present in `comm`: for each class in a fixed order, its first pair
// (a < b in rank order) ping-pongs small messages (α = median round trip / 2) and large ones
// (β = (median round trip / 2 - α) / bytes) while the others wait; the models then reach every
// rank. Collective over `comm`; every wait is bounded by the communicator's operation timeout.
Result<LinkModels> ProbeLinks(Communicator& comm,
                                           const std::vector<std::vector<std::string>>& transports,
                                           const ProbeOptions& options = {});

}  // namespace weft::collectives
