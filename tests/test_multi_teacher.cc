// UNIC, AMTML-KD and FEED (distill/multi_teacher.h): every closed form on tiny tensors against
// values computed by hand (loops below) or by PyTorch (Debian's python3-torch, the RKD reference
// implementation), the terms' state (standardisation, own optimiser, two-phase freezing), and each
// method end to end through distill_student on tiny data, with exact resume and the refusals.
#include <catch2/catch.hpp>
#include <torch/torch.h>

#include <cmath>
#include <set>
#include <sstream>

#include "distill/multi_teacher.h"
#include "io/h5.h"
#include "io/tensor_io.h"
#include "models/checkpoint.h"
#include "test_util.h"
#include "util/error.h"

using namespace mlfd;
using mlfd_test::MakeStore;
using mlfd_test::RunTool;
using mlfd_test::TempDir;

namespace {

double At(const torch::Tensor& t, int64_t i, int64_t j) { return t[i][j].item<double>(); }

std::string PyList(const torch::Tensor& t) {
  torch::Tensor c = t.to(torch::kFloat64).contiguous();
  std::ostringstream s;
  s.precision(17);
  s << "[";
  for (int64_t i = 0; i < c.size(0); ++i) {
    s << (i ? "," : "") << "[";
    for (int64_t j = 0; j < c.size(1); ++j) s << (j ? "," : "") << c[i][j].item<double>();
    s << "]";
  }
  s << "]";
  return s.str();
}

}  // namespace

TEST_CASE("UNIC: teacher-dropping coefficients for a fixed draw", "[unit][multi][unic]") {
  torch::Tensor loss = torch::tensor({{0.5, 2.0, 1.0}, {3.0, 0.1, 0.2}}, torch::kFloat32);
  torch::Tensor draw = torch::tensor({{0.3, 0.9, 0.7}, {0.1, 0.4, 0.6}}, torch::kFloat32);
  // Image 0: teacher 1 is the worst fitted (kept), teacher 0 drawn below p (dropped), teacher 2
  // kept. Image 1: teacher 0 kept although drawn below p, teacher 1 dropped, teacher 2 kept. Four
  // coefficients survive: each 1/4.
  torch::Tensor c = TeacherDropCoefficients(loss, 0.5, draw);
  const double expect[2][3] = {{0, 0.25, 0.25}, {0.25, 0, 0.25}};
  for (int i = 0; i < 2; ++i)
    for (int k = 0; k < 3; ++k) CHECK(At(c, i, k) == Approx(expect[i][k]));
  // p = 0: uniform averaging over images and teachers.
  torch::Tensor u = TeacherDropCoefficients(loss, 0.0, draw);
  CHECK(torch::allclose(u, torch::full({2, 3}, 1.0 / 6)));
  // No gradient flows through the coefficients.
  torch::Tensor l = loss.clone().requires_grad_(true);
  CHECK_FALSE(TeacherDropCoefficients(l, 0.5, draw).requires_grad());
}

TEST_CASE("UNIC: standardisation updates, momentum schedule and per-image loss", "[unit][multi][unic]") {
  CHECK(UnicMomentum(0.0) == Approx(1.0));
  CHECK(UnicMomentum(1.0) == Approx(0.001));
  CHECK(UnicMomentum(0.5) == Approx(0.5005));
  CHECK(UnicMomentum(0.25) == Approx(0.001 + 0.999 * 0.5 * (1 + std::cos(M_PI / 4))));

  torch::Tensor mean = torch::zeros({2}), std = torch::ones({2});
  torch::Tensor x = torch::tensor({{1.0, 2.0}, {3.0, 6.0}}, torch::kFloat32);
  // Standardised with the old statistics (0 / 1), then the batch's replace them (m = 1).
  CHECK(torch::allclose(StandardizeAndUpdate(x, mean, std, 1.0), x));
  CHECK(torch::allclose(mean, torch::tensor({2.0f, 4.0f})));
  CHECK(torch::allclose(std, torch::tensor({1.0f, 2.0f})));  // population std
  torch::Tensor x2 = torch::tensor({{2.0, 4.0}, {2.0, 4.0}}, torch::kFloat32);
  CHECK(torch::allclose(StandardizeAndUpdate(x2, mean, std, 0.5), torch::zeros({2, 2})));
  CHECK(torch::allclose(mean, torch::tensor({2.0f, 4.0f})));
  CHECK(torch::allclose(std, torch::tensor({0.5f, 1.0f})));  // 0.5 * old + 0.5 * 0
  // Maps: statistics per channel over images and positions.
  torch::Tensor mm = torch::zeros({2}), ms = torch::ones({2});
  torch::Tensor map = torch::arange(16, torch::kFloat32).view({2, 2, 2, 2});
  StandardizeAndUpdate(map, mm, ms, 1.0);
  // channel 0: {0,1,2,3, 8,9,10,11} mean 5.5; channel 1: {4..7, 12..15} mean 9.5; both have the
  // population variance (2 * (5.5^2 + 4.5^2 + 3.5^2 + 2.5^2)) / 8 = 17.25
  CHECK(mm[0].item<double>() == Approx(5.5));
  CHECK(mm[1].item<double>() == Approx(9.5));
  CHECK(ms[0].item<double>() == Approx(std::sqrt(17.25)));
  CHECK(ms[1].item<double>() == Approx(std::sqrt(17.25)));

  // 0.5 * (1 - cos) + 0.5 * smooth-L1: orthogonal unit vectors give 0.5 * 1 + 0.5 * 0.5.
  torch::Tensor p = torch::tensor({{1.0, 0.0}, {0.3, -0.2}}, torch::kFloat32);
  torch::Tensor t = torch::tensor({{0.0, 1.0}, {0.3, -0.2}}, torch::kFloat32);
  torch::Tensor l = UnicPerImageLoss(p, t);
  CHECK(l[0].item<double>() == Approx(0.75));
  CHECK(l[1].item<double>() == Approx(0.0).margin(1e-6));
  // Large differences: smooth-L1 is |d| - 0.5.
  torch::Tensor p3 = torch::tensor({{3.0, 0.0}}, torch::kFloat32), t3 = torch::tensor({{0.0, 0.0}}, torch::kFloat32);
  // cos with a zero vector is 0 (eps): 0.5 * 1 + 0.5 * mean(2.5, 0)
  CHECK(UnicPerImageLoss(p3, t3)[0].item<double>() == Approx(0.5 + 0.5 * 1.25));
  // Maps: per position along channels, then the mean over positions.
  torch::Tensor pm = torch::zeros({1, 2, 1, 2}), tm = torch::zeros({1, 2, 1, 2});
  pm[0][0][0][0] = 1, tm[0][1][0][0] = 1;  // position 0: orthogonal; position 1: both zero
  pm[0][0][0][1] = 1, tm[0][0][0][1] = 1;  // position 1: equal
  CHECK(UnicPerImageLoss(pm, tm)[0].item<double>() == Approx(0.75 / 2));
}

TEST_CASE("UNIC term: ladder sums, p = 0 averages, statistics live in the adapter", "[unit][multi][unic]") {
  torch::manual_seed(0);
  UnicSpec spec;
  spec.stages = {"layer3", "layer4"};
  spec.stage_channels = {4, 6};
  spec.teachers = {{"pool", "layer4", 5, 3}, {"embed", "layer4", 7, 2}};
  spec.hidden = 8, spec.hidden_last = 16, spec.drop_p = 0.0;
  auto term = MakeUnicTerm(1.0, spec);
  auto adapter = term->adapter();
  REQUIRE(adapter);
  // 2 teachers x 2 stages x (vector + map) projectors of 2 linear layers each, plus statistics.
  CHECK(adapter->named_parameters().size() == 2 * 2 * 2 * 4);
  CHECK(adapter->named_parameters()["t0_vector_layer4.fc1.weight"].sizes() == torch::IntArrayRef({16, 6}));
  CHECK(adapter->named_parameters()["t1_map_layer3.fc2.weight"].sizes() == torch::IntArrayRef({2, 8, 1, 1}));
  CHECK(adapter->named_parameters()["t0_map_layer3.fc1.bias"].abs().sum().item<double>() == 0.0);
  CHECK(adapter->named_parameters()["t0_map_layer3.fc1.weight"].abs().max().item<double>() <= 0.04 + 1e-6);
  CHECK(adapter->named_buffers().size() == 8);

  Signals s;
  s.student["layer3"] = torch::randn({3, 4, 4, 4});
  s.student["layer4"] = torch::randn({3, 6, 2, 2});
  s.teachers.resize(2);
  s.teachers[0]["pool"] = torch::randn({3, 5}) * 2 + 1;
  s.teachers[0]["layer4"] = torch::randn({3, 3, 2, 2});
  s.teachers[1]["embed"] = torch::randn({3, 7});
  s.teachers[1]["layer4"] = torch::randn({3, 2, 3, 3});
  s.progress = 0.0;
  torch::Tensor value = term->Compute(s);
  // With p = 0 the value is the mean over images and teachers of the per-image losses; at step 0
  // targets are standardised with 0 / 1, i.e. used as they are.
  torch::Tensor total = torch::zeros({3});
  {
    torch::NoGradGuard g;
    auto mods = adapter->named_modules("", false);
    auto fwd = [&](const std::string& name, const torch::Tensor& x) {
      auto m = mods[name];
      bool map = x.dim() == 4;
      torch::Tensor w1 = m->named_parameters()["fc1.weight"], b1 = m->named_parameters()["fc1.bias"];
      torch::Tensor w2 = m->named_parameters()["fc2.weight"], b2 = m->named_parameters()["fc2.bias"];
      if (map) {
        return torch::conv2d(torch::gelu(torch::conv2d(x, w1, b1)), w2, b2);
      }
      return torch::linear(torch::gelu(torch::linear(x, w1, b1)), w2, b2);
    };
    const std::vector<std::pair<std::string, std::string>> tl = {{"pool", "layer4"}, {"embed", "layer4"}};
    for (int k = 0; k < 2; ++k) {
      torch::Tensor pv = fwd(Msg("t", k, "_vector_layer3"), s.student["layer3"].mean({2, 3})) +
                         fwd(Msg("t", k, "_vector_layer4"), s.student["layer4"].mean({2, 3}));
      torch::Tensor target = s.teachers[k][tl[k].second];
      torch::Tensor pm = fwd(Msg("t", k, "_map_layer3"), torch::adaptive_avg_pool2d(s.student["layer3"], {target.size(2), target.size(3)})) +
                         fwd(Msg("t", k, "_map_layer4"), torch::adaptive_avg_pool2d(s.student["layer4"], {target.size(2), target.size(3)}));
      total += 0.5 * (UnicPerImageLoss(pv, s.teachers[k][tl[k].first]) + UnicPerImageLoss(pm, target));
    }
  }
  CHECK(value.item<double>() == Approx((total / 6).sum().item<double>()).epsilon(1e-5));
  // The running mean of teacher 0's vector moved to the batch mean (momentum 1 at progress 0).
  CHECK(torch::allclose(adapter->named_buffers()["t0_vector_mean"], s.teachers[0]["pool"].mean(0), 1e-5, 1e-5));
  CHECK(term->Details().count("t0"));
  CHECK(term->Details().at("momentum") == Approx(1.0));
  value.backward();
  CHECK(adapter->named_parameters()["t1_map_layer3.fc1.weight"].grad().abs().sum().item<double>() > 0);
}

TEST_CASE("AMTML-KD: instance weights, integrated target, KL", "[unit][multi][amtml]") {
  torch::Tensor beta = torch::tensor({{1.0, 2.0}, {0.5, -1.0}}, torch::kFloat32);
  torch::Tensor w = torch::tensor({1.0, 0.5}, torch::kFloat32);
  torch::Tensor theta = torch::tensor({{1.0, 0.0}, {0.3, 1.0}, {-1.0, 2.0}}, torch::kFloat32);
  torch::Tensor got = AmtmlInstanceWeights(beta, w, theta);
  for (int i = 0; i < 2; ++i) {
    double a[3], z = 0;
    for (int k = 0; k < 3; ++k) {
      a[k] = 0;
      for (int c = 0; c < 2; ++c) a[k] += At(beta, i, c) * w[c].item<double>() * At(theta, k, c);
      z += std::exp(a[k]);
    }
    for (int k = 0; k < 3; ++k) CHECK(At(got, i, k) == Approx(std::exp(a[k]) / z).epsilon(1e-6));
  }
  // q_i = sum_k w_ik softmax(z_ik / T)
  const double T = 2.0;
  std::vector<torch::Tensor> zt = {torch::tensor({{1.0, 2.0, 0.0}, {0.0, 0.0, 3.0}}, torch::kFloat32),
                                   torch::tensor({{2.0, -1.0, 1.0}, {1.0, 1.0, 1.0}}, torch::kFloat32),
                                   torch::tensor({{0.0, 0.0, 0.0}, {-2.0, 1.0, 0.5}}, torch::kFloat32)};
  torch::Tensor q = IntegratedTarget(got, zt, T);
  torch::Tensor zs = torch::tensor({{0.5, 0.5, 1.0}, {2.0, -1.0, 0.0}}, torch::kFloat32);
  double kl = 0;
  for (int i = 0; i < 2; ++i) {
    double qi[3] = {0, 0, 0};
    for (int k = 0; k < 3; ++k) {
      double z = 0;
      for (int c = 0; c < 3; ++c) z += std::exp(At(zt[k], i, c) / T);
      for (int c = 0; c < 3; ++c) qi[c] += At(got, i, k) * std::exp(At(zt[k], i, c) / T) / z;
    }
    double zsum = 0;
    for (int c = 0; c < 3; ++c) zsum += std::exp(At(zs, i, c) / T);
    for (int c = 0; c < 3; ++c) {
      CHECK(At(q, i, c) == Approx(qi[c]).epsilon(1e-6));
      kl += qi[c] * (std::log(qi[c]) - (At(zs, i, c) / T - std::log(zsum)));
    }
  }
  CHECK(KlToTarget(q, zs, T).item<double>() == Approx(kl / 2 * T * T).epsilon(1e-5));
  CHECK(KlToTarget(q, torch::log(q) * T, T).item<double>() == Approx(0.0).margin(1e-6));
}

TEST_CASE("AMTML-KD: RKD angle and distance equal the PyTorch reference", "[stage][multi][amtml][python]") {
  torch::manual_seed(5);
  torch::Tensor s = torch::randn({5, 4}), t = torch::randn({5, 4});
  TempDir tmp;
  // The reference implementation of Park et al. (RKD, CVPR 2019), verbatim in its PyTorch form.
  std::string code = R"(
import sys, torch
import torch.nn.functional as F
def pdist(e, eps=1e-12):
    e_square = e.pow(2).sum(dim=1)
    prod = e @ e.t()
    res = (e_square.unsqueeze(1) + e_square.unsqueeze(0) - 2 * prod).clamp(min=eps).sqrt().clone()
    res[range(len(e)), range(len(e))] = 0
    return res
def dist(student, teacher):
    t_d = pdist(teacher); t_d = t_d / t_d[t_d > 0].mean()
    d = pdist(student); d = d / d[d > 0].mean()
    return F.smooth_l1_loss(d, t_d)
def angle(student, teacher):
    td = teacher.unsqueeze(0) - teacher.unsqueeze(1)
    nt = F.normalize(td, p=2, dim=2)
    ta = torch.bmm(nt, nt.transpose(1, 2)).view(-1)
    sd = student.unsqueeze(0) - student.unsqueeze(1)
    ns = F.normalize(sd, p=2, dim=2)
    sa = torch.bmm(ns, ns.transpose(1, 2)).view(-1)
    return F.smooth_l1_loss(sa, ta)
s = torch.tensor()" + PyList(s) + R"(, dtype=torch.float64)
t = torch.tensor()" + PyList(t) + R"(, dtype=torch.float64)
print("%.12f %.12f" % (dist(s, t).item(), angle(s, t).item()))
)";
  auto r = mlfd_test::RunPython(tmp.path(), code, "");
  INFO(r.err);
  REQUIRE(r.exit_code == 0);
  std::istringstream in(r.out);
  double d = 0, a = 0;
  in >> d >> a;
  CHECK(RkdDistance(s, t).item<double>() == Approx(d).epsilon(1e-5));
  CHECK(RkdAngle(s, t).item<double>() == Approx(a).epsilon(1e-5));
  CHECK(RkdAngle(t, t).item<double>() == Approx(0.0).margin(1e-7));
  CHECK(RkdDistance(t * 3, t).item<double>() == Approx(0.0).margin(1e-6));  // scale-invariant
}

TEST_CASE("AMTML-KD term: weight modes, the weighting as a parameter group, two-phase freezing", "[unit][multi][amtml]") {
  torch::manual_seed(1);
  Signals s;
  s.student["layer4"] = torch::randn({4, 3, 2, 2});
  s.student["logits"] = torch::randn({4, 5}, torch::requires_grad());
  s.labels = torch::tensor({0, 1, 2, 3});
  s.teachers.resize(2);
  s.teachers[0]["logits"] = torch::randn({4, 5});
  s.teachers[1]["logits"] = torch::randn({4, 5});
  AmtmlSpec spec;
  spec.teachers = 2, spec.student_map = "layer4", spec.student_channels = 3, spec.w_angle = 0;

  SECTION("uniform weights give plain averaged multi-teacher KD") {
    spec.weights = "uniform";
    auto term = MakeAmtmlTerm(spec);
    torch::Tensor q = IntegratedTarget(torch::full({4, 2}, 0.5), {s.teachers[0]["logits"], s.teachers[1]["logits"]}, 5);
    CHECK(term->Compute(s).item<double>() == Approx(0.7 * KlToTarget(q, s.student["logits"], 5).item<double>()));
    CHECK(term->Details().at("w_t0") == Approx(0.5));
    CHECK(term->param_groups().empty());  // nothing trainable
    CHECK(term->adapter()->parameters().empty());
  }
  SECTION("fixed teacher-level weights") {
    spec.weights = "teacher", spec.fixed_teacher_weights = {3, 1};
    auto term = MakeAmtmlTerm(spec);
    torch::Tensor w = torch::tensor({{0.75, 0.25}}).expand({4, 2});
    torch::Tensor q = IntegratedTarget(w, {s.teachers[0]["logits"], s.teachers[1]["logits"]}, 5);
    CHECK(term->Compute(s).item<double>() == Approx(0.7 * KlToTarget(q, s.student["logits"], 5).item<double>()));
    CHECK(term->Details().at("w_t1") == Approx(0.25));
    CHECK(term->param_groups().empty());
  }
  SECTION("instance weights: the adapter's parameters, one group trained in phase 1 only") {
    spec.weights = "instance", spec.schedule = "two_phase", spec.phase1_epochs = 1, spec.lr = 0.1;
    auto term = MakeAmtmlTerm(spec);
    auto groups = term->param_groups();
    REQUIRE(groups.size() == 1);
    CHECK(groups[0].name == "weighting");
    CHECK(groups[0].lr == Approx(0.1));
    REQUIRE(groups[0].active);
    CHECK(groups[0].active(0));
    CHECK_FALSE(groups[0].active(1));
    // The group's tensors are the adapter's own (checkpointed with the run for resume).
    auto named = term->adapter()->named_parameters();
    REQUIRE(named.size() == 2);
    std::set<const void*> in_group;
    for (const auto& t : groups[0].params) in_group.insert(t.unsafeGetTensorImpl());
    CHECK(in_group.count(named["w"].unsafeGetTensorImpl()));
    CHECK(in_group.count(named["theta"].unsafeGetTensorImpl()));
    s.epoch = 0;
    torch::Tensor v = term->Compute(s);
    CHECK(term->Details().count("reg"));
    v.backward();
    REQUIRE(named["theta"].grad().defined());
    CHECK(named["theta"].grad().abs().sum().item<double>() > 0);
    // Phase 2: no regulariser and no gradient into the weighting.
    named["theta"].mutable_grad() = torch::Tensor();
    named["w"].mutable_grad() = torch::Tensor();
    s.student["logits"].mutable_grad() = torch::Tensor();
    s.epoch = 1;
    torch::Tensor v2 = term->Compute(s);
    CHECK_FALSE(term->Details().count("reg"));
    v2.backward();
    CHECK_FALSE(named["theta"].grad().defined());
    CHECK(s.student["logits"].grad().defined());  // the student still learns
    // The weights are the softmax of w . (beta * theta) with the parameters.
    torch::Tensor expect =
        AmtmlInstanceWeights(s.student["layer4"].mean({2, 3}), named["w"].detach(), named["theta"].detach()).mean(0);
    CHECK(term->Details().at("w_t0") == Approx(expect[0].item<double>()).epsilon(1e-5));
  }
  SECTION("a wrong number of fixed weights is refused") {
    spec.weights = "teacher", spec.fixed_teacher_weights = {1, 1, 1};
    CHECK_THROWS_WITH(MakeAmtmlTerm(spec), Catch::Contains("3 weights for 2 teachers"));
  }
}

TEST_CASE("AMTML-KD hints: normalised maps through a small regressor", "[unit][multi][amtml]") {
  auto hint = MakeNormalizedHintTerm(1.0, 1, "layer3", 2, "layer4", 3);
  auto w = hint->adapter()->named_parameters()["conv.weight"];
  CHECK(w.sizes() == torch::IntArrayRef({2, 3, 1, 1}));
  CHECK(w.abs().max().item<double>() <= 0.005);
  CHECK(hint->adapter()->named_parameters().size() == 1);  // no bias
  Signals s;
  s.teachers.resize(2);
  s.student["layer4"] = torch::randn({2, 3, 2, 2});
  s.teachers[1]["layer3"] = torch::randn({2, 2, 4, 4});  // larger: average-pooled to 2x2
  torch::Tensor x = torch::conv2d(s.student["layer4"] / s.student["layer4"].norm(2, 1, true), w);
  // The teacher map is normalised along its channels, then average-pooled to the student's size.
  torch::Tensor yn = s.teachers[1]["layer3"] / s.teachers[1]["layer3"].norm(2, 1, true);
  torch::Tensor expect = (x - torch::adaptive_avg_pool2d(yn, {2, 2})).pow(2).mean();
  CHECK(hint->Compute(s).item<double>() == Approx(expect.item<double>()).epsilon(1e-5));
}

TEST_CASE("FEED: normalisation, distance and the per-teacher transforms", "[stage][multi][feed]") {
  torch::Tensor x = torch::zeros({1, 2, 1, 2});
  x[0][0][0][0] = 3, x[0][1][0][0] = 4, x[0][1][0][1] = 5;  // positions (3,4) and (0,5)
  torch::Tensor flat = FeedNormalize(x, "flat");
  CHECK(flat[0][0][0][0].item<double>() == Approx(3 / std::sqrt(50.0)));
  CHECK(flat[0][1][0][1].item<double>() == Approx(5 / std::sqrt(50.0)));
  torch::Tensor pos = FeedNormalize(x, "position");
  CHECK(pos[0][0][0][0].item<double>() == Approx(0.6));
  CHECK(pos[0][1][0][0].item<double>() == Approx(0.8));
  CHECK(pos[0][1][0][1].item<double>() == Approx(1.0));
  torch::Tensor y = torch::ones({1, 2, 1, 2});  // flat: every element 1/2; position: 1/sqrt(2)
  double d_flat = (std::abs(3 / std::sqrt(50.0) - 0.5) + std::abs(0 - 0.5) + std::abs(4 / std::sqrt(50.0) - 0.5) +
                   std::abs(5 / std::sqrt(50.0) - 0.5)) / 4;
  CHECK(FeedDistance(x, y, "flat").item<double>() == Approx(d_flat));
  double r = 1 / std::sqrt(2.0);
  double d_pos = (std::abs(0.6 - r) + std::abs(0 - r) + std::abs(0.8 - r) + std::abs(1 - r)) / 4;
  CHECK(FeedDistance(x, y, "position").item<double>() == Approx(d_pos));
  CHECK(FeedDistance(y * 7, y, "flat").item<double>() == Approx(0.0).margin(1e-7));
  CHECK_THROWS_WITH(FeedNormalize(x, "bogus"), Catch::Contains("valid: flat, position"));

  FeedSpec spec;
  spec.student_level = "layer4", spec.student_channels = 4;
  spec.teachers = {{"layer4", 6}, {"fused", 3}};
  auto term = MakeFeedTerm(500, spec);
  CHECK(term->weight() == 500);
  auto params = term->adapter()->named_parameters();
  CHECK(params["ntl0.0.weight"].sizes() == torch::IntArrayRef({6, 4, 3, 3}));
  CHECK(params["ntl0.4.weight"].sizes() == torch::IntArrayRef({6, 6, 3, 3}));
  CHECK(params["ntl1.2.weight"].sizes() == torch::IntArrayRef({3, 3, 3, 3}));
  Signals s;
  s.student["layer4"] = torch::randn({2, 4, 2, 2});
  s.teachers.resize(2);
  s.teachers[0]["layer4"] = torch::randn({2, 6, 2, 2});
  s.teachers[1]["fused"] = torch::randn({2, 3, 4, 4});
  torch::Tensor v = term->Compute(s);
  auto det = term->Details();
  REQUIRE(det.count("t0"));
  REQUIRE(det.count("t1"));
  CHECK(v.item<double>() == Approx(det["t0"] + det["t1"]));
  // Teacher 0 by hand: conv, LeakyReLU(0.1), conv, LeakyReLU(0.1), conv.
  torch::NoGradGuard g;
  auto lrelu = [](const torch::Tensor& t) { return torch::where(t > 0, t, t * 0.1); };
  torch::Tensor h = torch::conv2d(s.student["layer4"], params["ntl0.0.weight"], params["ntl0.0.bias"], 1, 1);
  h = torch::conv2d(lrelu(h), params["ntl0.2.weight"], params["ntl0.2.bias"], 1, 1);
  h = torch::conv2d(lrelu(h), params["ntl0.4.weight"], params["ntl0.4.bias"], 1, 1);
  torch::Tensor hn = h / h.flatten(1).norm(2, 1).view({-1, 1, 1, 1});
  torch::Tensor tn = s.teachers[0]["layer4"] / s.teachers[0]["layer4"].flatten(1).norm(2, 1).view({-1, 1, 1, 1});
  CHECK(det["t0"] == Approx((hn - tn).abs().mean().item<double>()).epsilon(1e-5));
}

namespace {
const char* kTrain = "-v 0 --threads 2 --device cpu --small-stem --embed-dim 16 --batch-size 16 --workers 2 "
                     "--lr 0.05";

// One tiny dataset with three teachers of two architectures and two seeds (the same-dataset
// setting), plus a teacher on another dataset (the distinct-datasets setting).
struct SameDataset {
  TempDir tmp;
  std::string a, b, t18, t34, t18b, tb;
  SameDataset() {
    a = MakeStore(tmp, "dsa", 3, 40, 12, 1, 31);
    b = MakeStore(tmp, "dsb", 2, 20, 12, 1, 32);
    t18 = tmp / "t18.h5", t34 = tmp / "t34.h5", t18b = tmp / "t18b.h5", tb = tmp / "tb.h5";
    for (auto [out, args] : {std::pair{t18, "--arch resnet18 --width 0.125 --seed 3"}, std::pair{t34, "--arch resnet34 --width 0.125 --seed 3"},
                             std::pair{t18b, "--arch resnet18 --width 0.125 --seed 4"}}) {
      auto r = RunTool("train_teacher", Msg(kTrain, " ", args, " --epochs 4 --out ", out, " ", a));
      if (r.exit_code != 0) throw std::runtime_error(r.err);
    }
    auto r = RunTool("train_teacher", Msg(kTrain, " --arch resnet18 --width 0.125 --seed 3 --epochs 3 --out ", tb, " ", b));
    if (r.exit_code != 0) throw std::runtime_error(r.err);
    st = Msg("-v 0 --threads 2 --device cpu --batch-size 8 --lr 0.05 --seed 2 --like ", t18, " ");
    three = Msg(" --teacher ", t18, " --teacher ", t34, " --teacher ", t18b);
  }
  std::string st, three;  // student options; the three same-dataset teachers
};
SameDataset& Shared() {
  static SameDataset g;
  return g;
}
}  // namespace

TEST_CASE("distill_student: UNIC, AMTML-KD, uniform multi-teacher KD and FEED end to end", "[stage][multi][e2e]") {
  SameDataset& g = Shared();
  struct Case {
    std::string method, extra;
    std::vector<std::string> logged;
  };
  const std::vector<Case> cases = {
      {"unic", "--unic-hidden 16", {"train_unic", "train_unic_t0", "train_unic_t2", "train_unic_momentum", "train_ce"}},
      {"amtml", "", {"train_amtml", "train_amtml_kl", "train_amtml_angle", "train_amtml_w_t1", "train_amtml_reg",
                     "train_hint_t0.layer2_layer2", "train_hint_t2.layer4_layer4", "train_ce"}},
      {"mtkd", "", {"train_amtml_kl", "train_amtml_w_t2", "train_ce"}},
      {"feed", "", {"train_feed", "train_feed_t0", "train_feed_t1", "train_feed_t2", "train_ce"}}};
  for (const auto& c : cases) {
    INFO(c.method);
    auto r = RunTool("distill_student", Msg(g.st, "--epochs 3 --method ", c.method, " ", c.extra, g.three, " --out ",
                                            g.tmp / c.method, ".h5 ", g.a));
    INFO(r.err);
    REQUIRE(r.exit_code == 0);
    std::string metrics = mlfd_test::ReadText(g.tmp / c.method + ".metrics.jsonl");
    for (const auto& key : c.logged) {
      INFO(key);
      CHECK(metrics.find("\"" + key + "\"") != std::string::npos);
    }
    // A plain checkpoint of the student's architecture: no adapters exported; evaluate reads it.
    h5::File f = h5::File::Open(g.tmp / c.method + ".h5");
    for (const auto& n : f.List("state")) CHECK(n.find("term") == std::string::npos);
    auto ev = RunTool("evaluate", Msg("-v 0 --device cpu --out ", g.tmp / c.method, ".json ", g.tmp / c.method, ".h5 ", g.a));
    INFO(ev.err);
    CHECK(ev.exit_code == 0);
    auto j = nlohmann::json::parse(r.out);
    INFO(metrics);
    CHECK(j["best_val_top1"].get<double>() > 0.5);  // chance 0.33
  }
  CHECK(mlfd_test::ReadText(g.tmp / "mtkd.metrics.jsonl").find("train_hint") == std::string::npos);
  // FEED's reconstruction error of every transform falls during training.
  std::istringstream in(mlfd_test::ReadText(g.tmp / "feed.metrics.jsonl"));
  std::string line;
  std::vector<nlohmann::json> rows;
  while (std::getline(in, line)) rows.push_back(nlohmann::json::parse(line));
  REQUIRE(rows.size() == 3);
  for (const char* k : {"train_feed_t0", "train_feed_t1", "train_feed_t2"}) {
    INFO(k);
    CHECK(rows[2][k].get<double>() < rows[0][k].get<double>());
  }
}

TEST_CASE("distill_student: exact resume of UNIC statistics and AMTML-KD's weighting group", "[stage][multi][e2e]") {
  SameDataset& g = Shared();
  for (const char* m : {"unic", "amtml"}) {
    INFO(m);
    std::string extra = std::string(m) == "unic" ? " --unic-hidden 16" : "";
    std::string full = g.tmp / (std::string(m) + "_full.h5"), out = g.tmp / (std::string(m) + "_res.h5");
    auto r = RunTool("distill_student", Msg(g.st, "--epochs 2 --method ", m, extra, g.three, " --out ", full, " ", g.a));
    REQUIRE(r.exit_code == 0);
    auto part = RunTool("distill_student",
                        Msg(g.st, "--epochs 2 --method ", m, extra, " --stop-after 1", g.three, " --out ", out, " ", g.a));
    REQUIRE(part.exit_code == 0);
    auto rest = RunTool("distill_student", Msg(g.st, "--epochs 2 --method ", m, extra, " --resume", g.three, " --out ", out, " ", g.a));
    INFO(rest.err);
    REQUIRE(rest.exit_code == 0);
    h5::File fa = h5::File::Open(g.tmp / (std::string(m) + "_full.last.h5"));
    h5::File fb = h5::File::Open(g.tmp / (std::string(m) + "_res.last.h5"));
    for (const auto& n : fa.List("state")) CHECK(torch::equal(ReadTensor(fa, "state/" + n), ReadTensor(fb, "state/" + n)));
    for (const auto& n : fa.List("train_state/aux"))
      CHECK(torch::equal(ReadTensor(fa, "train_state/aux/" + n), ReadTensor(fb, "train_state/aux/" + n)));
    // The step counter and the loss's terms (the optimiser archives' bytes differ run to run).
    auto ea = fa.GetJsonAttr("train_state", "extra"), eb = fb.GetJsonAttr("train_state", "extra");
    CHECK(ea["step"] == eb["step"]);
    CHECK(ea["terms"] == eb["terms"]);
    if (std::string(m) == "amtml") {
      // The weighting: parameters in the run's aux (compared above), its own Adam saved by the trainer.
      CHECK(fa.Exists("train_state/aux/term0.theta"));
      CHECK(fb.Exists("train_state/optimizer_term0_weighting"));
    }
  }
  // Two-phase: the trainer steps the weighting in phase 1 only (unchanged by epoch 2), while the
  // student keeps training.
  std::string tp = g.tmp / "amtml_tp.h5";
  std::string args = Msg(g.st, "--epochs 2 --method amtml --amtml-schedule two_phase --amtml-phase1-epochs 1",
                         g.three, " --out ", tp, " ", g.a);
  REQUIRE(RunTool("distill_student", args + " --stop-after 1").exit_code == 0);
  torch::Tensor theta1, conv1;
  {
    h5::File f = h5::File::Open(g.tmp / "amtml_tp.last.h5");
    theta1 = ReadTensor(f, "train_state/aux/term0.theta");
    conv1 = ReadTensor(f, "state/" + f.List("state").at(0));
  }
  REQUIRE(RunTool("distill_student", args + " --resume").exit_code == 0);
  h5::File f = h5::File::Open(g.tmp / "amtml_tp.last.h5");
  CHECK(torch::equal(theta1, ReadTensor(f, "train_state/aux/term0.theta")));
  CHECK_FALSE(torch::equal(conv1, ReadTensor(f, "state/" + f.List("state").at(0))));
}

TEST_CASE("distill_student: cached signals of several teachers, one cache each", "[stage][multi][e2e]") {
  SameDataset& g = Shared();
  std::string c1 = g.tmp / "c1.h5", c2 = g.tmp / "c2.h5";
  REQUIRE(RunTool("extract_features", Msg("-v 0 --levels layer4 --splits train --out ", c1, " ", g.t18, " ", g.a)).exit_code == 0);
  REQUIRE(RunTool("extract_features", Msg("-v 0 --levels layer4 --splits train --out ", c2, " ", g.t34, " ", g.a)).exit_code == 0);
  auto r = RunTool("distill_student", Msg(g.st, "--epochs 1 --method feed --teacher-signals cached --features ", c1, ",", c2,
                                          " --teacher ", g.t18, " --teacher ", g.t34, " --out ", g.tmp / "fc.h5 ", g.a));
  INFO(r.err);
  CHECK(r.exit_code == 0);
  auto swapped = RunTool("distill_student", Msg(g.st, "--epochs 1 --method feed --teacher-signals cached --features ", c2, ",", c1,
                                                " --teacher ", g.t18, " --teacher ", g.t34, " --out ", g.tmp / "fs.h5 ", g.a));
  CHECK(swapped.exit_code == 1);
  CHECK(swapped.err.find("stale or foreign feature cache") != std::string::npos);
  CHECK_FALSE(mlfd_test::FileExists(g.tmp / "fs.h5"));
  auto one = RunTool("distill_student", Msg(g.st, "--epochs 1 --method feed --teacher-signals cached --features ", c1, " --teacher ",
                                            g.t18, " --teacher ", g.t34, " --out ", g.tmp / "fo.h5 ", g.a));
  CHECK(one.exit_code == 2);
  CHECK(one.err.find("1 caches for 2 teachers") != std::string::npos);
}

TEST_CASE("distill_student: teachers of distinct datasets give features, never foreign logits", "[stage][multi][e2e]") {
  SameDataset& g = Shared();
  auto unic = RunTool("distill_student", Msg(g.st, "--method unic --unic-hidden 16 --epochs 1 --teacher ", g.t18,
                                             " --teacher ", g.tb, " --out ", g.tmp / "ud.h5 ", g.a));
  INFO(unic.err);
  CHECK(unic.exit_code == 0);
  auto bad = RunTool("distill_student", Msg(g.st, "--epochs 1 --method amtml --teacher ", g.t18, " --teacher ", g.tb, " --out ",
                                            g.tmp / "bad.h5 ", g.a));
  CHECK(bad.exit_code == 1);
  CHECK(bad.err.find("has no logits for dataset 'dsa'") != std::string::npos);
  CHECK(bad.err.find("needs logits in the student's label space from every teacher") != std::string::npos);
  CHECK_FALSE(mlfd_test::FileExists(g.tmp / "bad.h5"));
  auto one = RunTool("distill_student", Msg(g.st, "--epochs 1 --method kd", g.three, " --out ", g.tmp / "bad.h5 ", g.a));
  CHECK(one.exit_code == 2);
  CHECK(one.err.find("takes one --teacher (got 3)") != std::string::npos);
  auto hints = RunTool("distill_student", Msg(g.st, "--epochs 1 --method amtml --amtml-hints 0:layer9:layer4", g.three, " --out ",
                                              g.tmp / "bad.h5 ", g.a));
  CHECK(hints.exit_code == 2);
  CHECK(hints.err.find("has no level 'layer9'") != std::string::npos);
  auto ce = RunTool("distill_student", Msg(g.st, "--method ce --epochs 1 --out ", g.tmp / "alone.h5 ", g.a));
  INFO(ce.err);
  CHECK(ce.exit_code == 0);
}

TEST_CASE("Makefile.pipeline: multi-teacher nodes in both settings", "[pipeline][multi][e2e]") {
  TempDir tmp;
  MakeStore(tmp, "pa", 3, 16, 12, 1, 41);
  MakeStore(tmp, "pb", 2, 16, 12, 1, 42);
  const std::string tiny = "--small-stem --width 0.125 --embed-dim 16 --batch-size 16 --workers 1 --lr 0.05 --epochs 1";
  auto make = [&](const std::string& file, const std::string& run) {
    return Msg("make -C ", MLFD_SOURCE_DIR, " -f Makefile.pipeline PIPELINE=tiny PIPELINE_FILE=", file,
               " MANIFESTS=", tmp.path(), " RUN=", run, " BIN=", MLFD_BIN_DIR, " VERBOSE=0");
  };
  // MLFD's setting: unic/feed from every stage-1 teacher, amtml/mtkd from the own teacher and T*.
  mlfd_test::WriteText(tmp / "distinct.mk", Msg("DATASETS = pa pb\nTEACHER_OPTS = ", tiny, " --arch resnet18\n",
                                                "METHODS = mlfd amtml unic\n"));
  auto plan = mlfd_test::RunShell(make(tmp / "distinct.mk", tmp / "d") + " -n");
  INFO(plan.err);
  REQUIRE(plan.exit_code == 0);
  const std::string d = tmp / "d/seed1/";
  CHECK(plan.out.find(Msg("--method amtml ")) != std::string::npos);
  CHECK(plan.out.find(Msg("--teacher ", d, "teachers/pa.h5 --teacher ", d, "joint/final.h5 --out ", d,
                          "students/amtml_pa.h5")) != std::string::npos);
  CHECK(plan.out.find(Msg("--teacher ", d, "teachers/pa.h5 --teacher ", d, "teachers/pb.h5 --out ", d,
                          "students/unic_pb.h5")) != std::string::npos);

  // The same-dataset setting, run for real: three teachers on pa, one student per method.
  mlfd_test::WriteText(tmp / "same.mk",
                       Msg("DATASETS = pa\nTEACHER_OPTS = ", tiny, "\nTEACHER_OPTS_pa = --arch resnet18\n",
                           "BASE_MODELS = teacher\nTEAM = a b c\nTEAM_OPTS_a = --arch resnet18\n",
                           "TEAM_OPTS_b = --arch resnet34\nTEAM_OPTS_c = --arch resnet18\nTEAM_SEED_SUFFIX_c = 7\n",
                           "STUDENT_OPTS = --batch-size 16 --workers 1 --lr 0.05 --epochs 1\n",
                           "METHODS = mtkd amtml feed1 feed unic\n",
                           "T3 = $(1)/team/%_a.h5 $(1)/team/%_b.h5 $(1)/team/%_c.h5\n",
                           "TEACHERS_mtkd = $(T3)\nTEACHERS_amtml = $(T3)\nTEACHERS_feed = $(T3)\nTEACHERS_unic = $(T3)\n",
                           "TEACHERS_feed1 = $(1)/team/%_a.h5\nMETHOD_feed1 = feed\nNODE_OPTS_unic = --unic-hidden 16\n"));
  auto run = mlfd_test::RunShell(make(tmp / "same.mk", tmp / "s") + " -j2");
  INFO(run.out.substr(run.out.size() > 3000 ? run.out.size() - 3000 : 0) << run.err.substr(run.err.size() > 3000 ? run.err.size() - 3000 : 0));
  REQUIRE(run.exit_code == 0);
  CHECK(run.out.find("--seed 17") != std::string::npos);  // team member c: seed <s><suffix>
  CHECK(run.out.find("build_joint") == std::string::npos);  // no T* in this setting
  std::string report = mlfd_test::ReadText(tmp / "s/report.md");
  for (const char* row : {"| individual (stage-1 teacher, this dataset only) | resnet18 | 1 |", "| teacher b (same dataset) | resnet34 |",
                          "| uniform multi-teacher KD student |", "| AMTML-KD student |", "| FEED student, one teacher |",
                          "| FEED student (parallel, every teacher) |", "| UNIC student |"}) {
    INFO(row);
    CHECK(report.find(row) != std::string::npos);
  }
  CHECK(report.find("AMTML-KD student") != std::string::npos);
  CHECK(report.find("uniform multi-teacher KD on test top-1") != std::string::npos);  // a finding
  LoadedCheckpoint f1 = LoadCheckpoint(tmp / "s/seed1/students/feed1_pa.h5");
  CHECK(f1.meta.model.arch == "resnet18");
  auto prov = h5::File::Open(tmp / "s/seed1/students/feed1_pa.h5").GetJsonAttr("/", "provenance").dump();
  CHECK(prov.find("pa_a.h5") != std::string::npos);
  CHECK(prov.find("pa_b.h5") == std::string::npos);  // feed1: teacher a only
}
