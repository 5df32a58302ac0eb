// MLP chunk arithmetic on top of Gemm.
#include "runtime/train/mlp_chunk.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <random>

#include "runtime/train/blas_gemm.h"

namespace weft::runtime::train {

MlpChunk::MlpChunk(const MlpShape& shape, int first, int end, uint64_t seed)
    : shape_(shape), first_(first), end_(end) {
  offsets_.push_back(0);
  for (int l = first; l < end; ++l) {
    offsets_.push_back(offsets_.back() + size_t(shape.in(l)) * shape.out(l) + shape.out(l));
  }
  params_.assign(offsets_.back(), 0.0f);
  grads_.assign(offsets_.back(), 0.0f);
  for (int l = first; l < end; ++l) {
    // He-uniform weights from a generator seeded by the layer alone; zero biases.
    std::mt19937_64 rng(seed * 1000003ull + 7919ull * (l + 1));
    float bound = std::sqrt(6.0f / shape.in(l));
    std::uniform_real_distribution<float> u(-bound, bound);
    float* w = params_.data() + LayerOffset(l);
    for (size_t i = 0; i < size_t(shape.in(l)) * shape.out(l); ++i) w[i] = u(rng);
  }
}

void MlpChunk::Forward(const float* x, int rows, Stash* st) const {
  const int n = end_ - first_;
  st->rows = rows;
  st->inputs.resize(n);
  st->outputs.resize(n);
  const float* in = x;
  for (int k = 0; k < n; ++k) {
    int l = first_ + k, fi = shape_.in(l), fo = shape_.out(l);
    st->inputs[k].assign(in, in + size_t(rows) * fi);
    std::vector<float>& y = st->outputs[k];
    y.resize(size_t(rows) * fo);
    const float* w = params_.data() + offsets_[k];
    const float* b = w + size_t(fi) * fo;
    for (int r = 0; r < rows; ++r) std::memcpy(&y[size_t(r) * fo], b, sizeof(float) * fo);
    Gemm(false, true, rows, fo, fi, 1.0f, st->inputs[k].data(), fi, w, fi, 1.0f, y.data(), fo);
    if (l != shape_.depth) {
      for (float& v : y) v = v > 0 ? v : 0;
    }
    in = y.data();
  }
}

void MlpChunk::Backward(const Stash& st, const float* dy, float* dx,
                        const std::function<void(int layer)>& on_layer_done) {
  const int n = end_ - first_, rows = st.rows;
  const float* grad_out = dy;
  for (int k = n - 1; k >= 0; --k) {
    int l = first_ + k, fi = shape_.in(l), fo = shape_.out(l);
    dz_.assign(grad_out, grad_out + size_t(rows) * fo);
    if (l != shape_.depth) {  // ReLU: pass the gradient where the output was positive
      const std::vector<float>& y = st.outputs[k];
      for (size_t i = 0; i < dz_.size(); ++i) {
        if (y[i] <= 0) dz_[i] = 0;
      }
    }
    float* gw = grads_.data() + offsets_[k];
    float* gb = gw + size_t(fi) * fo;
    Gemm(true, false, fo, fi, rows, 1.0f, dz_.data(), fo, st.inputs[k].data(), fi, 1.0f, gw, fi);
    for (int r = 0; r < rows; ++r) {
      const float* d = &dz_[size_t(r) * fo];
      for (int j = 0; j < fo; ++j) gb[j] += d[j];
    }
    // The input gradient is needed inside the chunk, or by the previous stage.
    float* target = nullptr;
    if (k > 0) {
      dtmp_.resize(size_t(rows) * fi);
      target = dtmp_.data();
    } else if (dx) {
      target = dx;
    }
    if (target) {
      const float* w = params_.data() + offsets_[k];
      Gemm(false, false, rows, fi, fo, 1.0f, dz_.data(), fo, w, fi, 0.0f, target, fi);
    }
    if (on_layer_done) on_layer_done(l);
    grad_out = dtmp_.data();
  }
}

void MlpChunk::ZeroGrads() { std::fill(grads_.begin(), grads_.end(), 0.0f); }

double SoftmaxCrossEntropy(const float* logits, const uint8_t* labels, int rows, int classes,
                           float scale, float* dlogits, int* correct) {
  double loss = 0;
  for (int r = 0; r < rows; ++r) {
    const float* z = logits + size_t(r) * classes;
    float mx = z[0];
    int arg = 0;
    for (int j = 1; j < classes; ++j) {
      if (z[j] > mx) {
        mx = z[j];
        arg = j;
      }
    }
    double sum = 0;
    for (int j = 0; j < classes; ++j) sum += std::exp(double(z[j]) - mx);
    double lse = mx + std::log(sum);
    loss += lse - z[labels[r]];
    if (correct && arg == labels[r]) ++*correct;
    if (dlogits) {
      for (int j = 0; j < classes; ++j) {
        double p = std::exp(double(z[j]) - lse);
        dlogits[size_t(r) * classes + j] = static_cast<float>(scale * (p - (j == labels[r])));
      }
    }
  }
  return loss;
}

Optimizer::Optimizer(Kind kind, float lr, float momentum, size_t n)
    : kind_(kind), lr_(lr), momentum_(momentum), m_(n, 0.0f) {
  if (kind == Kind::kAdam) v_.assign(n, 0.0f);
}

void Optimizer::Step(float* w, const float* g) {
  const size_t n = m_.size();
  if (kind_ == Kind::kSgd) {
    for (size_t i = 0; i < n; ++i) {
      m_[i] = momentum_ * m_[i] + g[i];
      w[i] -= lr_ * m_[i];
    }
    return;
  }
  ++t_;
  const float b1 = 0.9f, b2 = 0.999f, eps = 1e-8f;
  const float c1 = 1.0f / (1.0f - std::pow(b1, float(t_)));
  const float c2 = 1.0f / (1.0f - std::pow(b2, float(t_)));
  for (size_t i = 0; i < n; ++i) {
    m_[i] = b1 * m_[i] + (1 - b1) * g[i];
    v_[i] = b2 * v_[i] + (1 - b2) * g[i] * g[i];
    w[i] -= lr_ * (m_[i] * c1) / (std::sqrt(v_[i] * c2) + eps);
  }
}

}  // namespace weft::runtime::train
