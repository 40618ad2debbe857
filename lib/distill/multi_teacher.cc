// UNIC, AMTML-KD and FEED loss terms.
#include "distill/multi_teacher.h"

#include <cmath>
#include <sstream>

#include "train/optim.h"
#include "util/error.h"

namespace mlfd {

namespace F = torch::nn::functional;

namespace {

// Channel-wise statistics: reduce every dimension but 1.
std::vector<int64_t> ReduceDims(const torch::Tensor& x) {
  std::vector<int64_t> d{0};
  for (int64_t i = 2; i < x.dim(); ++i) d.push_back(i);
  return d;
}
torch::Tensor PerChannel(const torch::Tensor& v, const torch::Tensor& like) {
  std::vector<int64_t> shape(like.dim(), 1);
  shape[1] = -1;
  return v.view(shape);
}
// `x` (a map or a clip map) average-pooled to the sizes after the channels of `like`.
torch::Tensor PoolTo(const torch::Tensor& x, const torch::Tensor& like) {
  const auto size = like.sizes().slice(2);
  if (x.sizes().slice(2) == size) return x;
  return x.dim() == 5 ? torch::adaptive_avg_pool3d(x, size) : torch::adaptive_avg_pool2d(x, size);
}
// Every dimension after the channels (H, W; T, H, W of clip maps).
std::vector<int64_t> PositionDims(const torch::Tensor& x) {
  std::vector<int64_t> d;
  for (int64_t i = 2; i < x.dim(); ++i) d.push_back(i);
  return d;
}
int MapDims(bool clips) { return clips ? 5 : 4; }
}  // namespace

// ================================================================ UNIC

double UnicMomentum(double progress, double start, double end) {
  progress = std::min(1.0, std::max(0.0, progress));
  return end + (start - end) * 0.5 * (1.0 + std::cos(M_PI * progress));
}

torch::Tensor StandardizeAndUpdate(const torch::Tensor& x, torch::Tensor& mean, torch::Tensor& std, double m) {
  torch::NoGradGuard g;
  torch::Tensor xf = x.to(torch::kFloat32);
  torch::Tensor out = (xf - PerChannel(mean, xf)) / PerChannel(std, xf);
  auto dims = ReduceDims(xf);
  torch::Tensor bm = xf.mean(dims);
  torch::Tensor bs = xf.std(dims, /*unbiased=*/false);
  mean.mul_(1 - m).add_(bm * m);
  std.mul_(1 - m).add_(bs * m);
  std.clamp_min_(1e-6);
  return out;
}

torch::Tensor UnicPerImageLoss(const torch::Tensor& pred, const torch::Tensor& target) {
  torch::Tensor p = pred.to(torch::kFloat32), t = target.to(torch::kFloat32);
  if (p.sizes() != t.sizes()) throw Error(Msg("unic: prediction ", p.sizes(), " vs target ", t.sizes()));
  torch::Tensor cos = F::cosine_similarity(p, t, F::CosineSimilarityFuncOptions().dim(1).eps(1e-8));
  torch::Tensor sl1 = F::smooth_l1_loss(p, t, F::SmoothL1LossFuncOptions().reduction(torch::kNone)).mean(1);
  torch::Tensor l = 0.5 * (1 - cos) + 0.5 * sl1;  // N (vector) or N x H x W (map)
  if (l.dim() > 1) l = l.flatten(1).mean(1);
  return l;
}

torch::Tensor TeacherDropCoefficients(const torch::Tensor& loss, double p, const torch::Tensor& uniform) {
  torch::NoGradGuard g;
  if (loss.sizes() != uniform.sizes()) throw Error("teacher dropping: loss and draws differ in shape");
  torch::Tensor keep = uniform.ge(p).to(torch::kFloat32);
  torch::Tensor worst = loss.argmax(1, /*keepdim=*/true);
  keep.scatter_(1, worst, 1.0);
  return keep / keep.sum();
}

void TruncNormal_(torch::Tensor t, double std) {
  torch::NoGradGuard g;
  // Inverse-CDF sampling of N(0, std) restricted to [-2 std, 2 std].
  const double lo = 0.5 * (1 + std::erf(-2.0 / std::sqrt(2.0))), hi = 0.5 * (1 + std::erf(2.0 / std::sqrt(2.0)));
  t.uniform_(2 * lo - 1, 2 * hi - 1);
  t.erfinv_();
  t.mul_(std * std::sqrt(2.0));
  t.clamp_(-2 * std, 2 * std);
}

namespace {

// Linear -> GELU -> Linear, per position when applied to maps (as 1x1 convolutions; 1x1x1 ones on
// clip maps).
struct ProjectorImpl : torch::nn::Module {
  ProjectorImpl(int in, int hidden, int out, bool map, bool clips = false)
      : map(map), clips(clips) {
    torch::NoGradGuard g;
    if (map && clips) {
      d1 = register_module("fc1", torch::nn::Conv3d(torch::nn::Conv3dOptions(in, hidden, 1)));
      d2 = register_module("fc2", torch::nn::Conv3d(torch::nn::Conv3dOptions(hidden, out, 1)));
      TruncNormal_(d1->weight, 0.02), TruncNormal_(d2->weight, 0.02);
      d1->bias.zero_(), d2->bias.zero_();
    } else if (map) {
      c1 = register_module("fc1", torch::nn::Conv2d(torch::nn::Conv2dOptions(in, hidden, 1)));
      c2 = register_module("fc2", torch::nn::Conv2d(torch::nn::Conv2dOptions(hidden, out, 1)));
      TruncNormal_(c1->weight, 0.02), TruncNormal_(c2->weight, 0.02);
      c1->bias.zero_(), c2->bias.zero_();
    } else {
      l1 = register_module("fc1", torch::nn::Linear(in, hidden));
      l2 = register_module("fc2", torch::nn::Linear(hidden, out));
      TruncNormal_(l1->weight, 0.02), TruncNormal_(l2->weight, 0.02);
      l1->bias.zero_(), l2->bias.zero_();
    }
  }
  torch::Tensor forward(const torch::Tensor& x) {
    if (!map) return l2->forward(F::gelu(l1->forward(x)));
    return clips ? d2->forward(F::gelu(d1->forward(x))) : c2->forward(F::gelu(c1->forward(x)));
  }
  bool map, clips;
  torch::nn::Conv2d c1{nullptr}, c2{nullptr};
  torch::nn::Conv3d d1{nullptr}, d2{nullptr};
  torch::nn::Linear l1{nullptr}, l2{nullptr};
};
TORCH_MODULE(Projector);

class UnicTerm : public LossTerm {
 public:
  UnicTerm(double weight, UnicSpec spec) : LossTerm("unic", weight), spec_(std::move(spec)) {
    if (spec_.stages.empty()) throw UsageError("unic: no student stages for the projector ladder");
    if (spec_.teachers.empty()) throw UsageError("unic: no teachers");
    if (!spec_.vector_target && !spec_.map_target) throw UsageError("unic: no target (vector or map)");
    module_ = std::make_shared<torch::nn::Module>();
    const size_t L = spec_.stages.size();
    for (size_t k = 0; k < spec_.teachers.size(); ++k) {
      const auto& t = spec_.teachers[k];
      for (size_t l = 0; l < L; ++l) {
        int hidden = l + 1 == L ? spec_.hidden_last : spec_.hidden;
        if (spec_.vector_target)
          vec_.push_back(module_->register_module(Msg("t", k, "_vector_", spec_.stages[l]),
                                                  Projector(spec_.stage_channels[l], hidden, t.vector_dim, false)));
        if (spec_.map_target)
          map_.push_back(module_->register_module(
              Msg("t", k, "_map_", spec_.stages[l]),
              Projector(spec_.stage_channels[l], hidden, t.map_channels, true, spec_.clips)));
      }
      // Running statistics of the targets (start 0 / 1), resumed with the run.
      if (spec_.vector_target) {
        vmean_.push_back(module_->register_buffer(Msg("t", k, "_vector_mean"), torch::zeros({t.vector_dim})));
        vstd_.push_back(module_->register_buffer(Msg("t", k, "_vector_std"), torch::ones({t.vector_dim})));
      }
      if (spec_.map_target) {
        mmean_.push_back(module_->register_buffer(Msg("t", k, "_map_mean"), torch::zeros({t.map_channels})));
        mstd_.push_back(module_->register_buffer(Msg("t", k, "_map_std"), torch::ones({t.map_channels})));
      }
    }
  }
  std::vector<std::string> student_levels() const override { return spec_.stages; }
  std::vector<TeacherLevel> teacher_levels() const override {
    std::vector<TeacherLevel> v;
    for (size_t k = 0; k < spec_.teachers.size(); ++k) {
      if (spec_.vector_target) v.push_back({static_cast<int>(k), spec_.teachers[k].vector_level});
      if (spec_.map_target) v.push_back({static_cast<int>(k), spec_.teachers[k].map_level});
    }
    return v;
  }
  std::shared_ptr<torch::nn::Module> adapter() override { return module_; }

  torch::Tensor Compute(const Signals& s) override {
    const size_t K = spec_.teachers.size(), L = spec_.stages.size();
    const double m = UnicMomentum(s.progress, spec_.momentum_start, spec_.momentum_end);
    std::vector<torch::Tensor> stage;
    for (const auto& l : spec_.stages) {
      stage.push_back(s.student.at(l));
      if (stage.back().dim() != MapDims(spec_.clips))
        throw Error(Msg("unic: student level ", l, " is not a ", spec_.clips ? "clip map" : "map"));
    }
    // Each stage's global average, shared by every teacher's vector projectors.
    std::vector<torch::Tensor> pooled;
    if (spec_.vector_target)
      for (const auto& x : stage) pooled.push_back(x.mean(PositionDims(x)));
    // The per-image loss of one target type of teacher k: its standardised target against the sum
    // of the ladder's predictions (maps: each stage pooled to the target's size, per position).
    auto target_loss = [&](size_t k, const std::string& level, bool map, torch::Tensor& mean, torch::Tensor& std,
                           std::vector<Projector>& proj) {
      torch::Tensor target = s.teacher(k).at(level);
      if (target.dim() != (map ? MapDims(spec_.clips) : 2))
        throw Error(
            Msg("unic: teacher ", k, " level ", level,
                map ? (spec_.clips ? " is not a clip map" : " is not a map") : " is not a vector"));
      target = StandardizeAndUpdate(target, mean, std, m);
      torch::Tensor pred;
      for (size_t l = 0; l < L; ++l) {
        torch::Tensor v = proj[k * L + l]->forward(map ? PoolTo(stage[l], target) : pooled[l]);
        pred = pred.defined() ? pred + v : v;
      }
      return UnicPerImageLoss(pred, target);
    };
    std::vector<torch::Tensor> per_teacher;
    for (size_t k = 0; k < K; ++k) {
      const auto& t = spec_.teachers[k];
      torch::Tensor lk;
      int types = 0;
      if (spec_.vector_target) {
        lk = target_loss(k, t.vector_level, false, vmean_[k], vstd_[k], vec_);
        ++types;
      }
      if (spec_.map_target) {
        torch::Tensor lm = target_loss(k, t.map_level, true, mmean_[k], mstd_[k], map_);
        lk = lk.defined() ? lk + lm : lm;
        ++types;
      }
      per_teacher.push_back(lk / types);
    }
    torch::Tensor loss = torch::stack(per_teacher, 1);  // N x K
    torch::Tensor draws = torch::rand(loss.sizes(), loss.options());
    torch::Tensor coef = TeacherDropCoefficients(loss.detach(), spec_.drop_p, draws);
    details_.clear();
    torch::Tensor mean_per_teacher = loss.detach().mean(0).cpu();
    for (size_t k = 0; k < K; ++k) details_[Msg("t", k)] = mean_per_teacher[k].item<double>();
    details_["momentum"] = m;
    return (coef * loss).sum();
  }
  std::map<std::string, double> Details() const override { return details_; }

 private:
  UnicSpec spec_;
  std::shared_ptr<torch::nn::Module> module_;
  std::vector<Projector> vec_, map_;
  std::vector<torch::Tensor> vmean_, vstd_, mmean_, mstd_;
  std::map<std::string, double> details_;
};

}  // namespace

std::unique_ptr<LossTerm> MakeUnicTerm(double weight, const UnicSpec& spec) {
  return std::make_unique<UnicTerm>(weight, spec);
}

// ================================================================ AMTML-KD

torch::Tensor AmtmlInstanceWeights(const torch::Tensor& beta, const torch::Tensor& w, const torch::Tensor& theta) {
  // a_ik = sum_c w_c beta_ic theta_kc
  torch::Tensor a = torch::matmul(beta * w.unsqueeze(0), theta.t());
  return torch::softmax(a, 1);
}

torch::Tensor IntegratedTarget(const torch::Tensor& weights, const std::vector<torch::Tensor>& logits, double t) {
  torch::Tensor q;
  for (size_t k = 0; k < logits.size(); ++k) {
    torch::Tensor p = torch::softmax(logits[k].to(torch::kFloat32) / t, 1) * weights.select(1, k).unsqueeze(1);
    q = q.defined() ? q + p : p;
  }
  return q;
}

torch::Tensor KlToTarget(const torch::Tensor& q, const torch::Tensor& zs, double t) {
  torch::Tensor logp = torch::log_softmax(zs.to(torch::kFloat32) / t, 1);
  torch::Tensor kl = (q * (torch::log(q.clamp_min(1e-12)) - logp)).sum(1);
  return kl.mean() * (t * t);
}

namespace {
torch::Tensor PairwiseDistance(const torch::Tensor& e) {
  torch::Tensor sq = e.pow(2).sum(1);
  torch::Tensor d = (sq.unsqueeze(1) + sq.unsqueeze(0) - 2 * torch::matmul(e, e.t())).clamp_min(1e-12).sqrt();
  return d * (1 - torch::eye(e.size(0), e.options()));  // zero diagonal
}
torch::Tensor AngleMatrix(const torch::Tensor& e) {
  torch::Tensor diff = e.unsqueeze(0) - e.unsqueeze(1);  // [j][i] = e_i - e_j
  torch::Tensor n = F::normalize(diff, F::NormalizeFuncOptions().p(2).dim(2));
  return torch::bmm(n, n.transpose(1, 2)).view(-1);
}
}  // namespace

torch::Tensor RkdDistance(const torch::Tensor& s, const torch::Tensor& t) {
  torch::Tensor td, sd;
  {
    torch::NoGradGuard g;
    td = PairwiseDistance(t.to(torch::kFloat32));
    td = td / td.masked_select(td.gt(0)).mean();
  }
  sd = PairwiseDistance(s.to(torch::kFloat32));
  sd = sd / sd.masked_select(sd.gt(0)).mean();
  return F::smooth_l1_loss(sd, td);
}

torch::Tensor RkdAngle(const torch::Tensor& s, const torch::Tensor& t) {
  torch::Tensor ta;
  {
    torch::NoGradGuard g;
    ta = AngleMatrix(t.to(torch::kFloat32));
  }
  return F::smooth_l1_loss(AngleMatrix(s.to(torch::kFloat32)), ta);
}

namespace {

class AmtmlTerm : public LossTerm {
 public:
  explicit AmtmlTerm(AmtmlSpec spec) : LossTerm("amtml", 1.0), spec_(std::move(spec)) {
    const int K = spec_.teachers, C = spec_.student_channels;
    if (K < 1) throw UsageError("amtml: no teachers");
    own_ = std::make_shared<torch::nn::Module>();
    if (spec_.weights == "instance") {
      w_ = own_->register_parameter("w", torch::ones({C}));
      theta_ = own_->register_parameter("theta", torch::randn({K, C}) * 0.01);
    } else if (spec_.weights == "teacher") {
      if (!spec_.fixed_teacher_weights.empty()) {
        if (static_cast<int>(spec_.fixed_teacher_weights.size()) != K)
          throw UsageError(Msg("--amtml-teacher-weights: ", spec_.fixed_teacher_weights.size(), " weights for ", K,
                               " teachers"));
        torch::Tensor f = torch::tensor(spec_.fixed_teacher_weights, torch::kFloat64).to(torch::kFloat32);
        if (f.lt(0).any().item<bool>() || f.sum().item<double>() <= 0)
          throw UsageError("--amtml-teacher-weights: weights must be >= 0 with a positive sum");
        fixed_ = f / f.sum();
      } else {
        v_ = own_->register_parameter("v", torch::zeros({K}));
      }
    } else if (spec_.weights != "uniform") {
      throw UsageError("amtml: unknown weight mode '" + spec_.weights + "' (valid: instance, teacher, uniform)");
    }
    learned_ = !own_->parameters().empty();
  }
  std::vector<std::string> student_levels() const override { return {"logits", spec_.student_map}; }
  std::vector<TeacherLevel> teacher_levels() const override {
    std::vector<TeacherLevel> v;
    for (int k = 0; k < spec_.teachers; ++k) v.push_back({k, "logits"});
    return v;
  }
  // The weighting's parameters are an adapter (checkpointed for resume, never exported) stepped by
  // the trainer with their own Adam, only while the schedule trains them.
  std::shared_ptr<torch::nn::Module> adapter() override { return own_; }
  std::vector<ParamGroup> param_groups() override {
    if (!learned_) return {};
    return {ParamGroup{"weighting", own_->parameters(), spec_.lr, [this](int64_t e) { return Trainable(e); }}};
  }
  bool Trainable(int64_t epoch) const {
    return learned_ && (spec_.schedule == "joint" || epoch < spec_.phase1_epochs);
  }
  torch::Tensor Weights(const Signals& s, bool train) {
    const torch::Tensor& zs = s.student.at("logits");
    const int64_t n = zs.size(0);
    const int K = spec_.teachers;
    if (spec_.weights == "uniform") return torch::full({n, K}, 1.0 / K, zs.options().dtype(torch::kFloat32));
    if (fixed_.defined()) return fixed_.unsqueeze(0).expand({n, K});
    if (spec_.weights == "teacher") {
      torch::Tensor v = train ? v_ : v_.detach();
      return torch::softmax(v, 0).unsqueeze(0).expand({n, K});
    }
    torch::Tensor map = s.student.at(spec_.student_map).to(torch::kFloat32);
    if (map.dim() != 4 && map.dim() != 5)
      throw Error(Msg("amtml: student level ", spec_.student_map, " is not a map"));
    const auto dims = PositionDims(map);
    torch::Tensor beta = spec_.pool == "max" ? map.amax(dims) : map.mean(dims);
    if (spec_.detach) beta = beta.detach();
    return AmtmlInstanceWeights(beta, train ? w_ : w_.detach(), train ? theta_ : theta_.detach());
  }
  torch::Tensor Compute(const Signals& s) override {
    const torch::Tensor& zs = s.student.at("logits");
    std::vector<torch::Tensor> zt;
    for (int k = 0; k < spec_.teachers; ++k) {
      zt.push_back(s.teacher(k).at("logits"));
      if (zt.back().size(1) != zs.size(1))
        throw Error(Msg("amtml: teacher ", k, " predicts ", zt.back().size(1), " classes, the student ", zs.size(1)));
    }
    const bool train_now = Trainable(s.epoch);
    torch::Tensor weights = Weights(s, train_now);
    torch::Tensor q = IntegratedTarget(weights, zt, spec_.temperature);
    torch::Tensor kl = KlToTarget(q, zs, spec_.temperature);
    torch::Tensor loss = kl * spec_.alpha;
    details_.clear();
    details_["kl"] = kl.item<double>();
    if (spec_.w_angle > 0 || spec_.w_dist > 0) {
      torch::Tensor ps = torch::softmax(zs.to(torch::kFloat32) / spec_.temperature, 1);
      if (spec_.w_angle > 0) {
        torch::Tensor a = RkdAngle(ps, q.detach());
        loss = loss + a * spec_.w_angle;
        details_["angle"] = a.item<double>();
      }
      if (spec_.w_dist > 0) {
        torch::Tensor d = RkdDistance(ps, q.detach());
        loss = loss + d * spec_.w_dist;
        details_["dist"] = d.item<double>();
      }
    }
    if (train_now && spec_.reg > 0) {
      torch::Tensor r = torch::zeros({}, zs.options().dtype(torch::kFloat32));
      for (const auto& p : own_->parameters()) r = r + p.pow(2).sum();
      loss = loss + r * spec_.reg;
      details_["reg"] = r.item<double>();
    }
    torch::Tensor mw = weights.detach().mean(0).cpu();
    for (int k = 0; k < spec_.teachers; ++k) details_[Msg("w_t", k)] = mw[k].item<double>();
    return loss;
  }
  std::map<std::string, double> Details() const override { return details_; }
  void To(torch::Device d) override {
    if (fixed_.defined()) fixed_ = fixed_.to(d);
  }

 private:
  AmtmlSpec spec_;
  std::shared_ptr<torch::nn::Module> own_;
  torch::Tensor w_, theta_, v_, fixed_;
  bool learned_ = false;
  std::map<std::string, double> details_;
};

class NormalizedHintTerm : public LossTerm {
 public:
  NormalizedHintTerm(double weight, int k, std::string tl, int tc, std::string sl, int sc,
                     bool clips)
      : LossTerm(Msg("hint_t", k, ".", tl, "_", sl), weight),
        k_(k),
        tl_(std::move(tl)),
        sl_(std::move(sl)),
        clips_(clips) {
    module_ = std::make_shared<torch::nn::Module>();
    torch::NoGradGuard g;
    if (clips) {
      conv3_ = module_->register_module(
          "conv", torch::nn::Conv3d(torch::nn::Conv3dOptions(sc, tc, 1).bias(false)));
      conv3_->weight.uniform_(-0.005, 0.005);
    } else {
      conv_ = module_->register_module(
          "conv", torch::nn::Conv2d(torch::nn::Conv2dOptions(sc, tc, 1).bias(false)));
      conv_->weight.uniform_(-0.005, 0.005);
    }
  }
  std::vector<std::string> student_levels() const override { return {sl_}; }
  std::vector<TeacherLevel> teacher_levels() const override { return {{k_, tl_}}; }
  std::shared_ptr<torch::nn::Module> adapter() override { return module_; }
  torch::Tensor Compute(const Signals& s) override {
    torch::Tensor a = s.student.at(sl_), b = s.teacher(k_).at(tl_).to(torch::kFloat32);
    const int64_t dims = MapDims(clips_);
    if (a.dim() != dims || b.dim() != dims)
      throw Error(Msg(name(), clips_ ? ": hints match clip maps" : ": hints match maps"));
    auto nrm = F::NormalizeFuncOptions().p(2).dim(1);
    torch::Tensor n = F::normalize(a, nrm);
    torch::Tensor x = (clips_ ? conv3_->forward(n) : conv_->forward(n)).to(torch::kFloat32);
    torch::Tensor y = F::normalize(b, nrm);
    auto [px, py] = MatchSpatial(x, y, true, name());
    return F::mse_loss(px, py);
  }

 private:
  int k_;
  std::string tl_, sl_;
  bool clips_;
  std::shared_ptr<torch::nn::Module> module_;
  torch::nn::Conv2d conv_{nullptr};
  torch::nn::Conv3d conv3_{nullptr};
};

}  // namespace

std::unique_ptr<LossTerm> MakeAmtmlTerm(const AmtmlSpec& spec) { return std::make_unique<AmtmlTerm>(spec); }

std::unique_ptr<LossTerm> MakeNormalizedHintTerm(double weight, int k, const std::string& tl,
                                                 int tc, const std::string& sl, int sc,
                                                 bool clips) {
  return std::make_unique<NormalizedHintTerm>(weight, k, tl, tc, sl, sc, clips);
}

// ================================================================ FEED

torch::Tensor FeedNormalize(const torch::Tensor& x, const std::string& mode) {
  torch::Tensor f = x.to(torch::kFloat32);
  if (mode == "flat") {
    torch::Tensor n = f.flatten(1).norm(2, 1).clamp_min(1e-12);
    std::vector<int64_t> shape(f.dim(), 1);
    shape[0] = -1;
    return f / n.view(shape);
  }
  if (mode == "position") return F::normalize(f, F::NormalizeFuncOptions().p(2).dim(1).eps(1e-12));
  throw UsageError("feed: unknown normalisation '" + mode + "' (valid: flat, position)");
}

torch::Tensor FeedDistance(const torch::Tensor& s, const torch::Tensor& t, const std::string& mode) {
  if (s.sizes() != t.sizes()) throw Error(Msg("feed: transformed student ", s.sizes(), " vs teacher ", t.sizes()));
  return (FeedNormalize(s, mode) - FeedNormalize(t, mode)).abs().mean();
}

namespace {

class FeedTerm : public LossTerm {
 public:
  FeedTerm(double beta, FeedSpec spec) : LossTerm("feed", beta), spec_(std::move(spec)) {
    if (spec_.teachers.empty()) throw UsageError("feed: no teachers");
    FeedNormalize(torch::ones({1, 1, 1, 1}), spec_.norm);  // validates the mode
    module_ = std::make_shared<torch::nn::Module>();
    for (size_t k = 0; k < spec_.teachers.size(); ++k) {
      const int c = spec_.teachers[k].channels, sc = spec_.student_channels;
      const auto leaky = torch::nn::LeakyReLUOptions().negative_slope(0.1);
      // Clip maps: the same transform with 3x3x3 convolutions (over frames as well).
      torch::nn::Sequential ntl =
          spec_.clips ? torch::nn::Sequential(
                            torch::nn::Conv3d(torch::nn::Conv3dOptions(sc, c, 3).padding(1)),
                            torch::nn::LeakyReLU(leaky),
                            torch::nn::Conv3d(torch::nn::Conv3dOptions(c, c, 3).padding(1)),
                            torch::nn::LeakyReLU(leaky),
                            torch::nn::Conv3d(torch::nn::Conv3dOptions(c, c, 3).padding(1)))
                      : torch::nn::Sequential(
                            torch::nn::Conv2d(torch::nn::Conv2dOptions(sc, c, 3).padding(1)),
                            torch::nn::LeakyReLU(leaky),
                            torch::nn::Conv2d(torch::nn::Conv2dOptions(c, c, 3).padding(1)),
                            torch::nn::LeakyReLU(leaky),
                            torch::nn::Conv2d(torch::nn::Conv2dOptions(c, c, 3).padding(1)));
      ntl_.push_back(module_->register_module(Msg("ntl", k), ntl));
    }
  }
  std::vector<std::string> student_levels() const override { return {spec_.student_level}; }
  std::vector<TeacherLevel> teacher_levels() const override {
    std::vector<TeacherLevel> v;
    for (size_t k = 0; k < spec_.teachers.size(); ++k) v.push_back({static_cast<int>(k), spec_.teachers[k].level});
    return v;
  }
  std::shared_ptr<torch::nn::Module> adapter() override { return module_; }
  torch::Tensor Compute(const Signals& s) override {
    torch::Tensor xs = s.student.at(spec_.student_level);
    const int64_t dims = MapDims(spec_.clips);
    const char* kind = spec_.clips ? " is not a clip map" : " is not a map";
    if (xs.dim() != dims) throw Error(Msg("feed: student level ", spec_.student_level, kind));
    torch::Tensor loss;
    details_.clear();
    for (size_t k = 0; k < ntl_.size(); ++k) {
      torch::Tensor xt = s.teacher(k).at(spec_.teachers[k].level);
      if (xt.dim() != dims)
        throw Error(Msg("feed: teacher ", k, " level ", spec_.teachers[k].level, kind));
      auto [a, b] = MatchSpatial(ntl_[k]->forward(xs), xt, true, Msg("feed teacher ", k));
      torch::Tensor d = FeedDistance(a, b, spec_.norm);
      details_[Msg("t", k)] = d.item<double>();
      loss = loss.defined() ? loss + d : d;
    }
    return loss;
  }
  std::map<std::string, double> Details() const override { return details_; }

 private:
  FeedSpec spec_;
  std::shared_ptr<torch::nn::Module> module_;
  std::vector<torch::nn::Sequential> ntl_;
  std::map<std::string, double> details_;
};

}  // namespace

std::unique_ptr<LossTerm> MakeFeedTerm(double beta, const FeedSpec& spec) {
  return std::make_unique<FeedTerm>(beta, spec);
}

}  // namespace mlfd
