#include "base/dtype.h"

namespace weft {

bool IsFloatingPoint(DType d) {
  return d == DType::kFloat32 || d == DType::kFloat64 || d == DType::kFloat16 ||
         d == DType::kBFloat16;
}

std::string_view DTypeName(DType dtype) {
  switch (dtype) {
    case DType::kFloat32: return "float";
    case DType::kFloat64: return "double";
    case DType::kFloat16: return "half";
    case DType::kBFloat16: return "bfloat16";
    case DType::kInt8: return "int8";
    case DType::kUint8: return "uint8";
    case DType::kInt32: return "int32";
    case DType::kInt64: return "int64";
  }
  return "invalid";
}

std::string_view ReduceOpName(ReduceOp op) {
  switch (op) {
    case ReduceOp::kSum: return "sum";
    case ReduceOp::kProd: return "prod";
    case ReduceOp::kMin: return "min";
    case ReduceOp::kMax: return "max";
    case ReduceOp::kAvg: return "avg";
  }
  return "invalid";
}

std::optional<DType> ParseDType(std::string_view n) {
  if (n == "float" || n == "float32" || n == "f32" || n == "fp32") return DType::kFloat32;
  if (n == "double" || n == "float64" || n == "f64" || n == "fp64") return DType::kFloat64;
  if (n == "half" || n == "float16" || n == "f16" || n == "fp16") return DType::kFloat16;
  if (n == "bfloat16" || n == "bf16") return DType::kBFloat16;
  if (n == "int8" || n == "i8" || n == "char") return DType::kInt8;
  if (n == "uint8" || n == "u8") return DType::kUint8;
  if (n == "int32" || n == "i32" || n == "int") return DType::kInt32;
  if (n == "int64" || n == "i64") return DType::kInt64;
  return std::nullopt;
}

std::optional<ReduceOp> ParseReduceOp(std::string_view n) {
  if (n == "sum") return ReduceOp::kSum;
  if (n == "prod") return ReduceOp::kProd;
  if (n == "min") return ReduceOp::kMin;
  if (n == "max") return ReduceOp::kMax;
  if (n == "avg") return ReduceOp::kAvg;
  return std::nullopt;
}

}  // namespace weft
