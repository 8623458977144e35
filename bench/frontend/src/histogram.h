// Latency histogram with log-linear buckets (HDR-style): exact below 128 ns,
// then 128 sub-buckets per power of two, so any reported percentile is within
// 0.4 % of the true value. Fixed memory, O(1) record.
#pragma once

#include <algorithm>
#include <cstdint>
#include <vector>

namespace vb {

class Histogram {
 public:
  static constexpr int kSubBits = 7;
  static constexpr uint64_t kSub = 1ull << kSubBits;
  static constexpr int kMaxExp = 44;  // ~4.9 hours in ns; larger values clamp

  Histogram() : buckets_((kMaxExp - kSubBits + 2) * kSub, 0) {}

  /** Records one value in nanoseconds. */
  void record(uint64_t ns) {
    buckets_[indexOf(ns)]++;
    count_++;
    sum_ += ns;
    if (ns < min_) min_ = ns;
    if (ns > max_) max_ = ns;
  }

  void clear() {
    std::fill(buckets_.begin(), buckets_.end(), 0);
    count_ = 0;
    sum_ = 0;
    min_ = UINT64_MAX;
    max_ = 0;
  }

  uint64_t count() const { return count_; }
  uint64_t min() const { return count_ ? min_ : 0; }
  uint64_t max() const { return max_; }
  double mean() const { return count_ ? double(sum_) / double(count_) : 0.0; }

  /** Value at quantile q in [0,1] (nearest rank), as the bucket's midpoint
   * clamped to the observed min/max. 0 when empty. */
  double quantile(double q) const {
    if (count_ == 0) return 0;
    uint64_t rank = uint64_t(q * double(count_));
    if (double(rank) < q * double(count_)) rank++;
    if (rank == 0) rank = 1;
    uint64_t seen = 0;
    for (size_t i = 0; i < buckets_.size(); i++) {
      seen += buckets_[i];
      if (seen >= rank) {
        double lo = double(lowerBound(i)), hi = double(lowerBound(i + 1));
        double mid = (lo + hi) / 2 - 0.5;
        if (i < kSub) mid = lo;
        if (mid < double(min_)) mid = double(min_);
        if (mid > double(max_)) mid = double(max_);
        return mid;
      }
    }
    return double(max_);
  }

 private:
  static size_t indexOf(uint64_t v) {
    if (v < kSub) return size_t(v);
    int exp = 63 - __builtin_clzll(v);
    if (exp > kMaxExp) return (kMaxExp - kSubBits + 2) * kSub - 1;
    uint64_t mantissa = (v >> (exp - kSubBits)) & (kSub - 1);
    return size_t(exp - kSubBits + 1) * kSub + mantissa;
  }
  static uint64_t lowerBound(size_t i) {
    if (i < kSub) return i;
    size_t group = i / kSub;  // >= 1
    uint64_t mantissa = i % kSub;
    int exp = int(group) + kSubBits - 1;
    return (1ull << exp) + (mantissa << (exp - kSubBits));
  }

  std::vector<uint64_t> buckets_;
  uint64_t count_ = 0;
  uint64_t sum_ = 0;
  uint64_t min_ = UINT64_MAX;
  uint64_t max_ = 0;
};

}  // namespace vb
