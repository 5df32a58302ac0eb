// Model descriptions as data: a model is an ordered sequence of layers, each with its forward and
// backward compute, parameter bytes and activation bytes. Read from JSON (models/*.json) and used
// by the partition planner and the trainer. Part of weft_planner (depends only on weft_base).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "base/json.h"
#include "base/status.h"

namespace weft::runtime::planner {

// One layer. Compute is in floating-point operations per sample; bytes are per sample for
// activations. `activation_bytes` is the layer's output (what crosses a pipeline cut after it);
// `stash_bytes` is what the layer keeps per sample between its forward and its backward.
struct LayerDesc {
  std::string name;
  double fwd_flops = 0;
  double bwd_flops = 0;
  double param_bytes = 0;
  double activation_bytes = 0;
  double stash_bytes = 0;
};

// A model: layers in order plus the training setup the planner needs. A value type.
struct ModelDesc {
  std::string name;
  int64_t global_batch = 0;  // samples per optimizer step, over all replicas
  // Bytes of gradients and optimizer state held per parameter byte, in addition to the
  // parameters (SGD with momentum in fp32: 2; Adam with fp32 master weights for fp16: 7).
  double state_bytes_per_param_byte = 2;
  std::vector<LayerDesc> layers;

  double TotalParamBytes() const;
  double TotalFlopsPerSample() const;  // forward + backward
};

// JSON form:
//   {"name": "...", "global_batch": 256, "state_bytes_per_param_byte": 2,
//    "layers": [{"name": "fc0", "fwd_flops": 4e5, "bwd_flops": 8e5, "param_bytes": 8e5,
//                "activation_bytes": 1024, "stash_bytes": 1024, "repeat": 1}, ...]}
// `bwd_flops` defaults to 2 × fwd_flops, `stash_bytes` to activation_bytes, `repeat` (n copies,
// named name.0 … name.n-1) to 1. Errors (InvalidArgument) name the layer and the field.
Result<ModelDesc> ModelFromJson(const Json& json);
Result<ModelDesc> LoadModel(const std::string& path);
Json ModelToJson(const ModelDesc& model);

// The trainer's multi-layer perceptron on 28×28 images and 10 classes: `depth` hidden layers of
// `width` units (ReLU), then a linear layer to the classes; fp32, SGD with momentum. Layer i is
// "fc<i>"; its costs are those of the trainer's own matrix products.
ModelDesc MlpModel(int depth, int width, int64_t global_batch, int inputs = 784, int classes = 10);

}  // namespace weft::runtime::planner
