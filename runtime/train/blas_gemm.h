// Matrix products for the trainer: row-major GEMM through OpenBLAS's cblas when weft is built
// with it (WEFT_WITH_BLAS), else a portable loop (correct, much slower). Part of weft_train.
#pragma once

namespace weft::runtime::train {

// C = alpha·op(A)·op(B) + beta·C, row-major; op(A) is m×k, op(B) is k×n, C is m×n.
void Gemm(bool trans_a, bool trans_b, int m, int n, int k, float alpha, const float* a, int lda,
          const float* b, int ldb, float beta, float* c, int ldc);
// Sets the BLAS library's thread count (one per rank: ranks are the parallelism). No-op without
// OpenBLAS.
void SetBlasThreads(int n);
// "openblas 0.3.21 (1 thread)" or "portable loops".
const char* BlasName();

}  // namespace weft::runtime::train
