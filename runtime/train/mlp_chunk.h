// The trainer's model: a multi-layer perceptron (Linear + ReLU, a final Linear to the classes,
// softmax cross-entropy), held by each stage as chunks of consecutive layers. Each chunk owns its
// parameters and gradients as one flat buffer (layer by layer: weights then biases), so ranges of
// whole layers can be all-reduced in place as buckets. Part of weft_train.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace weft::runtime::train {

struct MlpShape {
  int inputs = 784;
  int depth = 3;  // hidden layers
  int width = 256;
  int classes = 10;
  int layers() const { return depth + 1; }
  int in(int l) const { return l == 0 ? inputs : width; }
  int out(int l) const { return l == depth ? classes : width; }
};

// Activations one micro-batch keeps between its forward and its backward.
struct Stash {
  int rows = 0;
  std::vector<std::vector<float>> inputs;   // per layer of the chunk: its input (rows × in)
  std::vector<std::vector<float>> outputs;  // per layer: its output after the activation
};

// Layers [first, end) of the MLP. Initialisation depends only on (seed, layer index), so any
// partition of the model starts from the same weights. Not thread-safe; owned by one stage.
class MlpChunk {
 public:
  MlpChunk(const MlpShape& shape, int first, int end, uint64_t seed);

  int first() const { return first_; }
  int end() const { return end_; }
  bool has_input_layer() const { return first_ == 0; }
  bool has_output_layer() const { return end_ == shape_.layers(); }
  int in_features() const { return shape_.in(first_); }
  int out_features() const { return shape_.out(end_ - 1); }
  size_t param_count() const { return params_.size(); }
  float* params() { return params_.data(); }
  float* grads() { return grads_.data(); }
  // Offset and size (floats) of layer l's parameters within the flat buffers.
  size_t LayerOffset(int l) const { return offsets_[l - first_]; }
  size_t LayerSize(int l) const { return offsets_[l - first_ + 1] - offsets_[l - first_]; }

  // Runs the chunk on `rows` inputs; `stash` keeps what the backward needs; the output is
  // stash->outputs.back() (logits for the last chunk).
  void Forward(const float* x, int rows, Stash* stash) const;
  // Accumulates parameter gradients from dy (rows × out_features) and writes the input gradient
  // into dx (unless null). Calls on_layer_done(l) after layer l's gradients are accumulated, last
  // layer first, so the caller can start its all-reduce.
  void Backward(const Stash& stash, const float* dy, float* dx,
                const std::function<void(int layer)>& on_layer_done);
  void ZeroGrads();

 private:
  MlpShape shape_;
  int first_, end_;
  std::vector<size_t> offsets_;
  std::vector<float> params_, grads_;
  std::vector<float> dz_, dtmp_;
};

// Softmax cross-entropy over `rows` logits: returns the summed loss, writes
// dlogits = scale·(softmax − onehot) and counts correct predictions.
double SoftmaxCrossEntropy(const float* logits, const uint8_t* labels, int rows, int classes,
                           float scale, float* dlogits, int* correct);

// SGD with momentum (v = μ·v + g; w −= lr·v) or Adam (β1 0.9, β2 0.999, ε 1e-8, bias-corrected)
// over a flat buffer.
class Optimizer {
 public:
  enum class Kind { kSgd, kAdam };
  Optimizer(Kind kind, float lr, float momentum, size_t n);
  void Step(float* params, const float* grads);

 private:
  Kind kind_;
  float lr_, momentum_;
  int64_t t_ = 0;
  std::vector<float> m_, v_;
};

}  // namespace weft::runtime::train
