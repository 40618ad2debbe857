// Distillation loss terms.
#include "distill/losses.h"

#include "util/error.h"

namespace mlfd {

namespace F = torch::nn::functional;

torch::Tensor SoftTargetLoss(const torch::Tensor& zs, const torch::Tensor& zt, double t) {
  torch::Tensor p = torch::softmax(zt.to(torch::kFloat32) / t, 1);
  torch::Tensor logq = torch::log_softmax(zs.to(torch::kFloat32) / t, 1);
  return -(p * logq).sum(1).mean() * (t * t);
}

namespace {
// "HxW" (maps) or "TxHxW" (clip maps): the sizes after the channels.
std::string SizeText(const torch::Tensor& x) {
  std::string s;
  for (int64_t i = 2; i < x.dim(); ++i) s += (s.empty() ? "" : "x") + std::to_string(x.size(i));
  return s;
}
}  // namespace

std::pair<torch::Tensor, torch::Tensor> MatchSpatial(const torch::Tensor& a, const torch::Tensor& b, bool pool,
                                                     const std::string& what) {
  if (a.dim() != b.dim())
    throw Error(Msg(what, ": a ", a.dim(), "-d level cannot be matched with a ", b.dim(), "-d level"));
  if (a.dim() < 4) return {a, b};  // vectors
  if (a.dim() > 5)
    throw Error(Msg(what, ": ", a.dim(), "-d levels are neither maps nor clip maps"));
  if (a.sizes().slice(2) == b.sizes().slice(2)) return {a, b};
  const bool clip = a.dim() == 5;
  if (!pool)
    throw Error(Msg(
        what, clip ? ": sizes T x H x W differ (student " : ": spatial sizes differ (student ",
        SizeText(a), ", teacher ", SizeText(b), "); choose other levels or pass --pool-mismatch"));
  std::vector<int64_t> size;
  for (int64_t i = 2; i < a.dim(); ++i) size.push_back(std::min(a.size(i), b.size(i)));
  auto to = [&](const torch::Tensor& x) {
    if (x.sizes().slice(2) == torch::IntArrayRef(size)) return x;
    return clip ? torch::adaptive_avg_pool3d(x, size) : torch::adaptive_avg_pool2d(x, size);
  };
  return {to(a), to(b)};
}

namespace {

class CeTerm : public LossTerm {
 public:
  CeTerm(double w, double ls) : LossTerm("ce", w), ls_(ls) {}
  std::vector<std::string> student_levels() const override { return {"logits"}; }
  torch::Tensor Compute(const Signals& s) override {
    const torch::Tensor z = s.student.at("logits").to(torch::kFloat32);
    const auto o = F::CrossEntropyFuncOptions().label_smoothing(ls_);
    torch::Tensor ce = F::cross_entropy(z, s.labels, o);
    if (!s.labels_b.defined() || s.mix >= 1.0) return ce;
    return ce * s.mix + F::cross_entropy(z, s.labels_b, o) * (1.0 - s.mix);
  }

 private:
  double ls_;
};

class KdTerm : public LossTerm {
 public:
  KdTerm(double w, double t, int k) : LossTerm(k ? Msg("kd", k) : "kd", w), t_(t), k_(k) {}
  std::vector<std::string> student_levels() const override { return {"logits"}; }
  std::vector<TeacherLevel> teacher_levels() const override { return {{k_, "logits"}}; }
  std::string note() const override { return Msg("T = ", t_); }
  torch::Tensor Compute(const Signals& s) override {
    const auto& zs = s.student.at("logits");
    const auto& zt = s.teacher(k_).at("logits");
    if (zs.size(1) != zt.size(1))
      throw Error(Msg("kd: the teacher predicts ", zt.size(1), " classes, the student ", zs.size(1)));
    return SoftTargetLoss(zs, zt, t_);
  }

 private:
  double t_;
  int k_;
};

class HintTerm : public LossTerm {
 public:
  HintTerm(double w, std::string sl, int sc, std::string tl, int tc, int map_dims,
           const std::string& regressor, bool pool, int k)
      : LossTerm("mse_" + sl + "_" + (k ? Msg("t", k, ".") : "") + tl, w),
        sl_(std::move(sl)),
        tl_(std::move(tl)),
        pool_(pool),
        k_(k),
        dims_(map_dims) {
    if (map_dims != 0 && map_dims != 4 && map_dims != 5)
      throw Error(Msg("level pair ", sl_, ":", tl_, ": ", map_dims,
                      "-d maps (maps are 4-d, clip maps 5-d)"));
    bool need = regressor == "conv" || (regressor == "auto" && sc != tc);
    if (regressor == "none" && sc != tc)
      throw UsageError(Msg("level pair ", sl_, ":", tl_, ": ", sc, " vs ", tc, " channels need a regressor"));
    if (need) {
      module_ = std::make_shared<torch::nn::Module>();
      if (map_dims == 4)
        conv_ = module_->register_module("conv", torch::nn::Conv2d(torch::nn::Conv2dOptions(sc, tc, 1).bias(false)));
      else if (map_dims == 5)
        conv3_ = module_->register_module(
            "conv", torch::nn::Conv3d(torch::nn::Conv3dOptions(sc, tc, 1).bias(false)));
      else
        linear_ = module_->register_module("linear", torch::nn::Linear(sc, tc));
    }
  }
  std::vector<std::string> student_levels() const override { return {sl_}; }
  std::vector<TeacherLevel> teacher_levels() const override { return {{k_, tl_}}; }
  std::shared_ptr<torch::nn::Module> adapter() override { return module_; }
  torch::Tensor Compute(const Signals& s) override {
    torch::Tensor a = s.student.at(sl_);
    torch::Tensor b = s.teacher(k_).at(tl_).to(a.scalar_type());
    if (module_) {
      if (a.dim() != (dims_ == 0 ? 2 : dims_))
        throw Error(Msg(name(), ": level ", sl_, " is ", a.dim(), "-d, not what its regressor was built for"));
      a = conv_ ? conv_->forward(a) : conv3_ ? conv3_->forward(a) : linear_->forward(a);
    }
    auto [x, y] = MatchSpatial(a, b, pool_, name());
    if (x.sizes() != y.sizes())
      throw Error(Msg(name(), ": student ", x.sizes(), " vs teacher ", y.sizes()));
    return F::mse_loss(x.to(torch::kFloat32), y.to(torch::kFloat32));
  }

 private:
  std::string sl_, tl_;
  bool pool_;
  int k_, dims_;
  std::shared_ptr<torch::nn::Module> module_;
  torch::nn::Conv2d conv_{nullptr};
  torch::nn::Conv3d conv3_{nullptr};
  torch::nn::Linear linear_{nullptr};
};

}  // namespace

std::unique_ptr<LossTerm> MakeCeTerm(double weight, double ls) { return std::make_unique<CeTerm>(weight, ls); }
std::unique_ptr<LossTerm> MakeKdTerm(double weight, double t, int k) { return std::make_unique<KdTerm>(weight, t, k); }
std::unique_ptr<LossTerm> MakeHintTerm(double weight, const std::string& sl, int sc,
                                       const std::string& tl, int tc, int map_dims,
                                       const std::string& regressor, bool pool, int k) {
  return std::make_unique<HintTerm>(weight, sl, sc, tl, tc, map_dims, regressor, pool, k);
}

}  // namespace mlfd
