// IDX reading through zlib's gz* functions (which read plain files too) when weft is built with
// zlib; otherwise plain files directly and .gz files through `gzip -dc`.
#include "runtime/train/fashion_mnist.h"

#ifdef WEFT_HAVE_ZLIB
#include <zlib.h>
#else
#include <cstdio>
#endif

#include <sys/stat.h>

#include <cerrno>
#include <cstring>

#include "base/env.h"

namespace weft::runtime::train {

namespace {
WEFT_ENV_KNOB(kFmnistDir, "WEFT_FMNIST_DIR", "/usr/share/datasets/fashion-mnist",
              "directory of the Fashion-MNIST IDX files for weft train");

bool Exists(const std::string& p) {
  struct stat st;
  return stat(p.c_str(), &st) == 0;
}
}  // namespace

std::string FashionMnistDir() { return kFmnistDir.Get(); }

namespace {

// A byte source: zlib's gzFile, or a stdio stream (a plain file or a gzip pipe).
class IdxReader {
 public:
  ~IdxReader() { Close(); }
  bool Open(const std::string& path) {
#ifdef WEFT_HAVE_ZLIB
    gz_ = gzopen(path.c_str(), "rb");
    return gz_ != nullptr;
#else
    bool gz = path.size() > 3 && path.compare(path.size() - 3, 3, ".gz") == 0;
    if (gz) {
      std::string q;
      for (char c : path) q += c == '\'' ? std::string("'\\''") : std::string(1, c);
      f_ = popen(("gzip -dc '" + q + "'").c_str(), "r");
      pipe_ = true;
    } else {
      f_ = std::fopen(path.c_str(), "rb");
    }
    return f_ != nullptr;
#endif
  }
  // Bytes read, 0 at the end, -1 on error.
  long Read(void* buf, size_t n) {
#ifdef WEFT_HAVE_ZLIB
    return gzread(gz_, buf, static_cast<unsigned>(n));
#else
    size_t r = std::fread(buf, 1, n, f_);
    return r == 0 && std::ferror(f_) ? -1 : static_cast<long>(r);
#endif
  }
  void Close() {
#ifdef WEFT_HAVE_ZLIB
    if (gz_) gzclose(gz_);
    gz_ = nullptr;
#else
    if (f_) pipe_ ? pclose(f_) : std::fclose(f_);
    f_ = nullptr;
#endif
  }

 private:
#ifdef WEFT_HAVE_ZLIB
  gzFile gz_ = nullptr;
#else
  FILE* f_ = nullptr;
  bool pipe_ = false;
#endif
};

}  // namespace

Result<std::vector<uint8_t>> ReadIdx(const std::string& path, int* dims, std::vector<int>* shape) {
  IdxReader f;
  if (!f.Open(path)) return NotFoundError("cannot open " + path + ": " + std::strerror(errno));
  auto fail = [&](const std::string& why) { return DataLossError(path + ": " + why); };
  unsigned char hdr[4];
  if (f.Read(hdr, 4) != 4) return fail("truncated header");
  if (hdr[0] != 0 || hdr[1] != 0 || hdr[2] != 0x08) return fail("not an unsigned-byte IDX file");
  *dims = hdr[3];
  if (*dims < 1 || *dims > 4) return fail("bad dimension count " + std::to_string(*dims));
  shape->clear();
  size_t total = 1;
  for (int i = 0; i < *dims; ++i) {
    unsigned char b[4];
    if (f.Read(b, 4) != 4) return fail("truncated header");
    int n = (b[0] << 24) | (b[1] << 16) | (b[2] << 8) | b[3];
    if (n <= 0 || n > (1 << 24)) return fail("bad dimension " + std::to_string(n));
    shape->push_back(n);
    total *= static_cast<size_t>(n);
  }
  if (total > (size_t{1} << 31)) return fail("too large");
  std::vector<uint8_t> data(total);
  size_t got = 0;
  while (got < total) {
    long r = f.Read(data.data() + got, std::min<size_t>(total - got, 1 << 30));
    if (r <= 0)
      return fail("truncated data (" + std::to_string(got) + " of " + std::to_string(total) +
                  " bytes)");
    got += static_cast<size_t>(r);
  }
  return data;
}

namespace {

Result<ImageSet> LoadPair(const std::string& dir, const std::string& prefix) {
  auto find = [&](const std::string& base) {
    for (const std::string& p : {dir + "/" + base + ".gz", dir + "/" + base}) {
      if (Exists(p)) return p;
    }
    return std::string();
  };
  std::string images = find(prefix + "-images-idx3-ubyte");
  std::string labels = find(prefix + "-labels-idx1-ubyte");
  if (images.empty() || labels.empty()) {
    return NotFoundError("Fashion-MNIST " + prefix + " files not found in " + dir +
                         " (install Debian's dataset-fashion-mnist or set WEFT_FMNIST_DIR)");
  }
  ImageSet set;
  int dims = 0;
  std::vector<int> shape;
  WEFT_ASSIGN_OR_RETURN(set.pixels, ReadIdx(images, &dims, &shape));
  if (dims != 3)
    return DataLossError(images + ": expected 3 dimensions, got " + std::to_string(dims));
  set.rows = shape[1];
  set.cols = shape[2];
  int64_t n = shape[0];
  WEFT_ASSIGN_OR_RETURN(set.labels, ReadIdx(labels, &dims, &shape));
  if (dims != 1 || shape[0] != n) {
    return DataLossError(labels + ": holds " + std::to_string(shape[0]) + " labels for " +
                         std::to_string(n) + " images");
  }
  for (uint8_t l : set.labels) {
    if (l > 9) return DataLossError(labels + ": label " + std::to_string(l) + " out of range");
  }
  return set;
}

}  // namespace

Result<FashionMnist> LoadFashionMnist(const std::string& dir) {
  FashionMnist d;
  WEFT_ASSIGN_OR_RETURN(d.train, LoadPair(dir, "train"));
  WEFT_ASSIGN_OR_RETURN(d.test, LoadPair(dir, "t10k"));
  return d;
}

}  // namespace weft::runtime::train
