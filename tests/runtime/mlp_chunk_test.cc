// The trainer's arithmetic: MLP chunk gradients against finite differences, a model cut into
// chunks computing exactly what the whole model computes, the loss, the optimizers, IDX reading.
#include "runtime/train/mlp_chunk.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <random>

#include "runtime/train/fashion_mnist.h"

namespace weft::runtime::train {
namespace {

MlpShape Small() {
  MlpShape s;
  s.inputs = 7;
  s.depth = 2;
  s.width = 5;
  s.classes = 3;
  return s;
}

double Loss(MlpChunk& m, const std::vector<float>& x, const std::vector<uint8_t>& y, int rows) {
  Stash st;
  m.Forward(x.data(), rows, &st);
  return SoftmaxCrossEntropy(st.outputs.back().data(), y.data(), rows, 3, 0, nullptr, nullptr);
}

TEST(MlpChunkTest, GradientsMatchFiniteDifferences) {
  MlpShape s = Small();
  MlpChunk m(s, 0, s.layers(), 3);
  const int rows = 4;
  std::mt19937 rng(1);
  std::normal_distribution<float> n(0, 1);
  std::vector<float> x(rows * s.inputs);
  for (float& v : x) v = n(rng);
  std::vector<uint8_t> y = {0, 2, 1, 2};
  Stash st;
  m.Forward(x.data(), rows, &st);
  std::vector<float> dlogits(rows * 3);
  SoftmaxCrossEntropy(st.outputs.back().data(), y.data(), rows, 3, 1.0f, dlogits.data(), nullptr);
  std::vector<int> done;
  m.Backward(st, dlogits.data(), nullptr, [&](int l) { done.push_back(l); });
  EXPECT_EQ(done, (std::vector<int>{2, 1, 0}));
  int checked = 0;
  for (size_t i = 0; i < m.param_count(); i += 3) {
    float keep = m.params()[i];
    const float h = 1e-2f;
    m.params()[i] = keep + h;
    double up = Loss(m, x, y, rows);
    m.params()[i] = keep - h;
    double down = Loss(m, x, y, rows);
    m.params()[i] = keep;
    double numeric = (up - down) / (2 * h);
    EXPECT_NEAR(m.grads()[i], numeric, 2e-3 + 2e-2 * std::fabs(numeric)) << "param " << i;
    ++checked;
  }
  EXPECT_GT(checked, 20);
}

TEST(MlpChunkTest, ChunksComputeWhatTheWholeModelComputes) {
  MlpShape s = Small();
  MlpChunk whole(s, 0, 3, 9), a(s, 0, 1, 9), b(s, 1, 3, 9);
  ASSERT_EQ(whole.param_count(), a.param_count() + b.param_count());
  for (size_t i = 0; i < a.param_count(); ++i) ASSERT_EQ(whole.params()[i], a.params()[i]);
  for (size_t i = 0; i < b.param_count(); ++i) {
    ASSERT_EQ(whole.params()[a.param_count() + i], b.params()[i]);
  }
  const int rows = 3;
  std::vector<float> x(rows * s.inputs);
  for (size_t i = 0; i < x.size(); ++i) x[i] = std::sin(float(i));
  Stash sw, sa, sb;
  whole.Forward(x.data(), rows, &sw);
  a.Forward(x.data(), rows, &sa);
  b.Forward(sa.outputs.back().data(), rows, &sb);
  EXPECT_EQ(sw.outputs.back(), sb.outputs.back());
  std::vector<float> dy = {0.1f, -0.2f, 0.3f, 0.0f, 0.5f, -0.5f, 1.0f, 0.25f, -1.0f};
  whole.Backward(sw, dy.data(), nullptr, nullptr);
  std::vector<float> dmid(rows * s.width);
  b.Backward(sb, dy.data(), dmid.data(), nullptr);
  a.Backward(sa, dmid.data(), nullptr, nullptr);
  for (size_t i = 0; i < a.param_count(); ++i) EXPECT_EQ(whole.grads()[i], a.grads()[i]);
  for (size_t i = 0; i < b.param_count(); ++i) {
    EXPECT_EQ(whole.grads()[a.param_count() + i], b.grads()[i]);
  }
}

TEST(MlpChunkTest, LossAndOptimizers) {
  float logits[] = {0, 0, 0, 10, 0, 0};
  uint8_t labels[] = {1, 0};
  float d[6];
  int correct = 0;
  double loss = SoftmaxCrossEntropy(logits, labels, 2, 3, 0.5f, d, &correct);
  EXPECT_NEAR(loss, std::log(3.0) + std::log(1 + 2 * std::exp(-10.0)), 1e-6);
  EXPECT_EQ(correct, 1);  // row 0 ties (argmax: class 0, label 1); row 1 predicts 0, right
  EXPECT_NEAR(d[1], 0.5 * (1.0 / 3 - 1), 1e-6);
  float w[2] = {1, 1}, g[2] = {1, -2};
  Optimizer sgd(Optimizer::Kind::kSgd, 0.1f, 0.5f, 2);
  sgd.Step(w, g);
  sgd.Step(w, g);
  EXPECT_FLOAT_EQ(w[0], 1 - 0.1f * 1 - 0.1f * 1.5f);
  float w2[2] = {1, 1};
  Optimizer adam(Optimizer::Kind::kAdam, 0.01f, 0, 2);
  adam.Step(w2, g);
  EXPECT_NEAR(w2[0], 1 - 0.01, 1e-6);  // the first bias-corrected Adam step is lr·sign(g)
  EXPECT_NEAR(w2[1], 1 + 0.01, 1e-6);
}

TEST(FashionMnistTest, ReadsIdxAndNamesBadFiles) {
  std::string dir = "/tmp/weft-idx-" + std::to_string(getpid());
  ASSERT_EQ(system(("mkdir -p " + dir).c_str()), 0);
  // Written plain, then gzip-compressed by the gzip tool (the loader prefers .gz files).
  auto write = [&](const std::string& name, std::vector<uint8_t> bytes) {
    std::string plain = dir + "/" + name.substr(0, name.size() - 3);
    std::FILE* f = std::fopen(plain.c_str(), "wb");
    std::fwrite(bytes.data(), 1, bytes.size(), f);
    std::fclose(f);
    ASSERT_EQ(system(("gzip -f '" + plain + "'").c_str()), 0);
  };
  std::vector<uint8_t> img = {0, 0, 8, 3, 0, 0, 0, 2, 0, 0, 0, 2,
                              0, 0, 0, 2, 1, 2, 3, 4, 5, 6, 7, 8};
  std::vector<uint8_t> lab = {0, 0, 8, 1, 0, 0, 0, 2, 3, 9};
  write("train-images-idx3-ubyte.gz", img);
  write("train-labels-idx1-ubyte.gz", lab);
  write("t10k-images-idx3-ubyte.gz", img);
  write("t10k-labels-idx1-ubyte.gz", lab);
  auto d = LoadFashionMnist(dir);
  ASSERT_TRUE(d.ok()) << d.status().ToString();
  EXPECT_EQ(d->train.count(), 2);
  EXPECT_EQ(d->train.pixels_per_image(), 4);
  EXPECT_EQ(d->train.pixels[7], 8);
  EXPECT_EQ(d->test.labels[1], 9);
  write("t10k-labels-idx1-ubyte.gz", {0, 0, 8, 1, 0, 0, 0, 3, 1, 2, 3});
  auto bad = LoadFashionMnist(dir);
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("holds 3 labels for 2 images"), std::string::npos);
  write("t10k-labels-idx1-ubyte.gz", {0, 0, 8, 1, 0, 0, 0, 9, 1});
  bad = LoadFashionMnist(dir);
  EXPECT_NE(bad.status().message().find("truncated data"), std::string::npos)
      << bad.status().ToString();
  auto missing = LoadFashionMnist("/nonexistent");
  EXPECT_EQ(missing.status().code(), StatusCode::kNotFound);
  EXPECT_NE(missing.status().message().find("dataset-fashion-mnist"), std::string::npos);
  ASSERT_EQ(system(("rm -rf " + dir).c_str()), 0);
}

}  // namespace
}  // namespace weft::runtime::train
