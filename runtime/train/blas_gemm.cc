// GEMM: cblas when available; otherwise an i-k-j loop that at least streams rows.
#include "runtime/train/blas_gemm.h"

#include <string>

#ifdef WEFT_HAVE_OPENBLAS
#include <cblas.h>
#endif

namespace weft::runtime::train {

void Gemm(bool trans_a, bool trans_b, int m, int n, int k, float alpha, const float* a, int lda,
          const float* b, int ldb, float beta, float* c, int ldc) {
#ifdef WEFT_HAVE_OPENBLAS
  cblas_sgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans,
              trans_b ? CblasTrans : CblasNoTrans, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
#else
  for (int i = 0; i < m; ++i) {
    float* ci = c + static_cast<long>(i) * ldc;
    for (int j = 0; j < n; ++j) ci[j] = beta == 0 ? 0 : beta * ci[j];
    for (int p = 0; p < k; ++p) {
      float av =
          alpha * (trans_a ? a[static_cast<long>(p) * lda + i] : a[static_cast<long>(i) * lda + p]);
      if (av == 0) continue;
      if (!trans_b) {
        const float* bp = b + static_cast<long>(p) * ldb;
        for (int j = 0; j < n; ++j) ci[j] += av * bp[j];
      } else {
        for (int j = 0; j < n; ++j) ci[j] += av * b[static_cast<long>(j) * ldb + p];
      }
    }
  }
#endif
}

void SetBlasThreads(int n) {
#ifdef WEFT_HAVE_OPENBLAS
  openblas_set_num_threads(n);
#else
  (void)n;
#endif
}

const char* BlasName() {
#ifdef WEFT_HAVE_OPENBLAS
  static const std::string name = std::string("OpenBLAS (") + openblas_get_config() + ", " +
                                  std::to_string(openblas_get_num_threads()) + " thread(s))";
  return name.c_str();
#else
  return "portable loops (built without OpenBLAS)";
#endif
}

}  // namespace weft::runtime::train
