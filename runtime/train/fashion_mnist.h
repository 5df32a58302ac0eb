// Fashion-MNIST from Debian's dataset-fashion-mnist package: IDX files (gzip-compressed) with
// 28×28 uint8 images and uint8 labels. Part of weft_train.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "base/status.h"

namespace weft::runtime::train {

struct ImageSet {
  int rows = 0, cols = 0;
  std::vector<uint8_t> pixels;  // count × rows × cols
  std::vector<uint8_t> labels;  // count
  int64_t count() const { return static_cast<int64_t>(labels.size()); }
  int pixels_per_image() const { return rows * cols; }
};

struct FashionMnist {
  ImageSet train, test;
};

// The directory holding the IDX files: WEFT_FMNIST_DIR, default the package's
// /usr/share/datasets/fashion-mnist.
std::string FashionMnistDir();
// Reads train-{images,labels} and t10k-{images,labels} (.gz or plain) from `dir`. NotFound names
// the file and the package to install; DataLoss names a malformed file and what is wrong.
Result<FashionMnist> LoadFashionMnist(const std::string& dir);
// One IDX file (magic 0x801 labels or 0x803 images), gzip or plain.
Result<std::vector<uint8_t>> ReadIdx(const std::string& path, int* dims, std::vector<int>* shape);

}  // namespace weft::runtime::train
