// The group recursive doubling and Rabenseifner pair ranks in (allreduce_recursive_doubling.cc,
// allreduce_rabenseifner.cc; the tuner predicts their steps from it).
#pragma once

namespace weft::collectives::internal {

inline bool IsPowerOfTwo(int n) { return n > 0 && (n & (n - 1)) == 0; }

// p, the largest power of two <= n, ranks take part in the log2(p) steps, member m pairing with
// member m XOR 2^k. The first 2r ranks (r = n - p) fold in pairs before the steps and out after
// them: the even one of a pair sits out, the odd one stands for both.
struct PowerOfTwoGroup {
  explicit PowerOfTwoGroup(int n) {
    while (p * 2 <= n) {
      p *= 2;
      ++log2p;
    }
    r = n - p;
  }
  // Whether `rank` is one of a folding pair.
  bool Folds(int rank) const { return rank < 2 * r; }
  // The member `rank` is, or -1 for one that sits out.
  int Member(int rank) const { return Folds(rank) ? (rank % 2 == 0 ? -1 : rank / 2) : rank - r; }
  // The rank of member m.
  int RankOf(int m) const { return m < r ? m * 2 + 1 : m + r; }

  int p = 1;
  int log2p = 0;
  int r = 0;
};

}  // namespace weft::collectives::internal
