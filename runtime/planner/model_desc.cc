// Model descriptions: JSON reading/writing and the trainer's MLP.
#include "runtime/planner/model_desc.h"

namespace weft::runtime::planner {

double ModelDesc::TotalParamBytes() const {
  double s = 0;
  for (const LayerDesc& l : layers) s += l.param_bytes;
  return s;
}

double ModelDesc::TotalFlopsPerSample() const {
  double s = 0;
  for (const LayerDesc& l : layers) s += l.fwd_flops + l.bwd_flops;
  return s;
}

namespace {

Result<double> NonNegative(const Json& j, std::string_view key, const std::string& what, double def,
                           bool required) {
  if (!j.Has(key)) {
    if (required) return InvalidArgumentError(what + ": missing \"" + std::string(key) + "\"");
    return def;
  }
  WEFT_ASSIGN_OR_RETURN(double v, j.GetNumber(key, what));
  if (!(v >= 0)) {
    return InvalidArgumentError(what + ": \"" + std::string(key) + "\" must be >= 0, got " +
                                Json(v).Dump());
  }
  return v;
}

}  // namespace

Result<ModelDesc> ModelFromJson(const Json& json) {
  if (!json.is_object()) return InvalidArgumentError("model: expected a JSON object");
  ModelDesc m;
  m.name = json.StringOr("name", "model");
  std::string what = "model " + m.name;
  WEFT_ASSIGN_OR_RETURN(m.global_batch, json.GetInt("global_batch", what));
  if (m.global_batch <= 0) {
    return InvalidArgumentError(what + ": global_batch must be positive, got " +
                                std::to_string(m.global_batch));
  }
  WEFT_ASSIGN_OR_RETURN(m.state_bytes_per_param_byte,
                        NonNegative(json, "state_bytes_per_param_byte", what, 2, false));
  WEFT_ASSIGN_OR_RETURN(const Json::Array* layers, json.GetArray("layers", what));
  if (layers->empty()) return InvalidArgumentError(what + ": no layers");
  for (size_t i = 0; i < layers->size(); ++i) {
    const Json& lj = (*layers)[i];
    std::string lw = what + ", layer " + std::to_string(i);
    if (!lj.is_object()) return InvalidArgumentError(lw + ": expected an object");
    LayerDesc l;
    l.name = lj.StringOr("name", "layer" + std::to_string(i));
    lw += " (" + l.name + ")";
    WEFT_ASSIGN_OR_RETURN(l.fwd_flops, NonNegative(lj, "fwd_flops", lw, 0, true));
    WEFT_ASSIGN_OR_RETURN(l.bwd_flops, NonNegative(lj, "bwd_flops", lw, 2 * l.fwd_flops, false));
    WEFT_ASSIGN_OR_RETURN(l.param_bytes, NonNegative(lj, "param_bytes", lw, 0, true));
    WEFT_ASSIGN_OR_RETURN(l.activation_bytes, NonNegative(lj, "activation_bytes", lw, 0, true));
    WEFT_ASSIGN_OR_RETURN(l.stash_bytes,
                          NonNegative(lj, "stash_bytes", lw, l.activation_bytes, false));
    int64_t repeat = 1;
    if (lj.Has("repeat")) {
      WEFT_ASSIGN_OR_RETURN(repeat, lj.GetInt("repeat", lw));
      if (repeat < 1 || repeat > 100000) {
        return InvalidArgumentError(lw + ": repeat must be in [1, 100000], got " +
                                    std::to_string(repeat));
      }
    }
    if (repeat == 1) {
      m.layers.push_back(l);
    } else {
      for (int64_t r = 0; r < repeat; ++r) {
        LayerDesc c = l;
        c.name = l.name + "." + std::to_string(r);
        m.layers.push_back(c);
      }
    }
  }
  return m;
}

Result<ModelDesc> LoadModel(const std::string& path) {
  WEFT_ASSIGN_OR_RETURN(Json j, ParseJsonFile(path));
  Result<ModelDesc> m = ModelFromJson(j);
  if (!m.ok()) return m.status().WithContext(path);
  return m;
}

Json ModelToJson(const ModelDesc& model) {
  Json j = Json::MakeObject();
  j.Set("name", model.name);
  j.Set("global_batch", model.global_batch);
  j.Set("state_bytes_per_param_byte", model.state_bytes_per_param_byte);
  Json layers = Json::MakeArray();
  for (const LayerDesc& l : model.layers) {
    Json lj = Json::MakeObject();
    lj.Set("name", l.name);
    lj.Set("fwd_flops", l.fwd_flops);
    lj.Set("bwd_flops", l.bwd_flops);
    lj.Set("param_bytes", l.param_bytes);
    lj.Set("activation_bytes", l.activation_bytes);
    lj.Set("stash_bytes", l.stash_bytes);
    layers.Push(std::move(lj));
  }
  j.Set("layers", std::move(layers));
  return j;
}

ModelDesc MlpModel(int depth, int width, int64_t global_batch, int inputs, int classes) {
  ModelDesc m;
  m.name = "mlp-" + std::to_string(depth) + "x" + std::to_string(width);
  m.global_batch = global_batch;
  m.state_bytes_per_param_byte = 2;  // fp32 gradient + momentum
  int in = inputs;
  for (int i = 0; i <= depth; ++i) {
    int out = i == depth ? classes : width;
    LayerDesc l;
    l.name = "fc" + std::to_string(i);
    double macs = static_cast<double>(in) * out;
    l.fwd_flops = 2 * macs;
    // Weight gradient always; the input gradient except on the first layer (no one needs it).
    l.bwd_flops = i == 0 ? 2 * macs : 4 * macs;
    l.param_bytes = 4.0 * (macs + out);
    l.activation_bytes = 4.0 * out;
    // The layer keeps its input and its pre-activation output for the backward pass.
    l.stash_bytes = 4.0 * (in + out);
    m.layers.push_back(l);
    in = out;
  }
  return m;
}

}  // namespace weft::runtime::planner
