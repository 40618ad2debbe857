// Optimisation machinery: learning-rate schedules against their closed forms, parameter groups
// without weight decay on biases and norms, option checking, and dynamic loss scaling.
#include <catch2/catch.hpp>
#include <torch/torch.h>

#include <cmath>

#include "train/optim.h"

using namespace mlfd;

TEST_CASE("schedules follow their closed forms", "[unit][train]") {
  OptimOptions o;
  o.lr = 1.0;
  o.schedule = "cosine";
  o.warmup_epochs = 1;
  // 10 steps per epoch, 50 steps: warm-up over the first 10, then cosine to 0.
  CHECK(LearningRate(o, 0, 50, 10) == Approx(0.1));
  CHECK(LearningRate(o, 9, 50, 10) == Approx(1.0));
  CHECK(LearningRate(o, 10, 50, 10) == Approx(1.0));
  CHECK(LearningRate(o, 30, 50, 10) == Approx(0.5));
  CHECK(LearningRate(o, 50, 50, 10) == Approx(0.0).margin(1e-12));
  o.schedule = "step";
  o.warmup_epochs = 0;
  o.step_epochs = 2;
  o.gamma = 0.1;
  CHECK(LearningRate(o, 19, 50, 10) == Approx(1.0));
  CHECK(LearningRate(o, 20, 50, 10) == Approx(0.1));
  CHECK(LearningRate(o, 45, 50, 10) == Approx(0.01));
  o.schedule = "onecycle";
  o.onecycle_pct = 0.3;
  o.onecycle_div = 25;
  o.onecycle_final_div = 1e4;
  CHECK(LearningRate(o, 0, 100, 10) == Approx(0.04));
  CHECK(LearningRate(o, 30, 100, 10) == Approx(1.0));
  CHECK(LearningRate(o, 100, 100, 10) == Approx(0.04 / 1e4));
  o.schedule = "constant";
  CHECK(LearningRate(o, 77, 100, 10) == 1.0);
}

TEST_CASE("weight decay skips biases and norm parameters", "[unit][train]") {
  torch::nn::Sequential m(torch::nn::Linear(3, 4), torch::nn::BatchNorm1d(4));
  OptimOptions o;
  o.weight_decay = 0.1;
  auto opt = MakeOptimizer(o, *m);
  REQUIRE(opt->param_groups().size() == 2);
  CHECK(opt->param_groups()[0].params().size() == 1);  // the Linear weight
  CHECK(opt->param_groups()[1].params().size() == 3);  // Linear bias, BN weight and bias
  CHECK(static_cast<torch::optim::SGDOptions&>(opt->param_groups()[1].options()).weight_decay() == 0.0);
  SetLearningRate(*opt, 0.5);
  CHECK(opt->param_groups()[0].options().get_lr() == 0.5);
  OptimOptions bad;
  bad.lr = -1;
  bad.optimizer = "lbfgs";
  CHECK_THROWS_WITH(bad.Check(), Catch::Contains("--lr") && Catch::Contains("--optimizer"));
}

TEST_CASE("loss scaler skips non-finite steps", "[unit][train]") {
  LossScaler s(1024.0, 2);
  torch::Tensor p = torch::zeros({2}, torch::requires_grad());
  p.mutable_grad() = torch::tensor({2048.0f, 1024.0f});
  CHECK(s.UnscaleAndCheck({p}));
  CHECK(p.grad()[0].item<float>() == 2.0f);
  p.mutable_grad() = torch::tensor({INFINITY, 1.0f});
  CHECK_FALSE(s.UnscaleAndCheck({p}));
  CHECK(s.scale() == 512.0);
}

