// Host identity: which ranks can share memory. Not the hostname (containers share names): the
// kernel boot id combined with the IPC, network and pid namespaces, so two containers or two
// network-namespace test hosts on one machine count as different hosts. WEFT_HOST_ID overrides.
#pragma once

#include <string>

namespace weft {

// Stable for the life of the process; cheap after the first call. Thread-safe.
const std::string& HostIdentity();

}  // namespace weft
