// `weft train`: the reference training job (an MLP on Fashion-MNIST) run as a partition plan
// across the ranks of a weft job. Part of weft_train.
#pragma once

#include <string>
#include <vector>

namespace weft::runtime::train {

// Returns the process exit code (0 ok, 1 failure, 2 usage). See `weft train --help`.
int TrainCommand(const std::vector<std::string>& args);

}  // namespace weft::runtime::train
