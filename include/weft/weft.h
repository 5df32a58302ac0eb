// weft's public C++ API: include this one header.
//   auto comm = weft::Communicator::FromEnvironment();   // under weft run, torchrun, mpirun, ...
//   auto work = (*comm)->AllReduce(grad, grad, n, weft::DType::kFloat32, weft::ReduceOp::kSum);
//   ... overlap compute ...
//   weft::Status s = work->Wait();
// Errors are Status/Result values; nothing here throws.
#pragma once

#include "base/deadline.h"
#include "base/dtype.h"
#include "base/status.h"
#include "collectives/communicator.h"
#include "rendezvous/store.h"

namespace weft {

using collectives::CommOptions;
using collectives::Communicator;
using collectives::UniqueId;
using collectives::Work;

}  // namespace weft
