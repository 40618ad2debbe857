// Utilities: SHA-256 against the FIPS vectors, option parsing with config files and overrides,
// Check() reporting every problem, JSON key paths in errors, progress formatting.
#include <catch2/catch.hpp>

#include <algorithm>
#include <sstream>
#include <thread>

#include "test_util.h"
#include "app/app.h"
#include "util/error.h"
#include "util/json_view.h"
#include "util/progress.h"
#include "util/sha256.h"

using namespace mlfd;
using mlfd_test::TempDir;

TEST_CASE("sha256 matches the FIPS 180-4 test vectors", "[unit][util]") {
  CHECK(Sha256Hex("") == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  CHECK(Sha256Hex("abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  CHECK(Sha256Hex("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq") ==
        "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
  std::string million(1000000, 'a');
  CHECK(Sha256Hex(million) == "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
  TempDir tmp;
  mlfd_test::WriteText(tmp / "f", "abc");
  CHECK(Sha256File(tmp / "f") == Sha256Hex("abc"));
  CHECK_THROWS_WITH(Sha256File(tmp / "nope"), Catch::Contains("nope: cannot open"));
}

namespace {
struct DemoOptions {
  int epochs = 10;
  double lr = 0.1;
  std::string optimizer = "sgd";
  bool nesterov = false;
  std::vector<std::string> levels;
  void Register(po::options_description& d, const std::string& prefix) {
    d.add_options()((prefix + "epochs").c_str(), po::value<int>(&epochs)->default_value(epochs), "")(
        (prefix + "lr").c_str(), po::value<double>(&lr)->default_value(lr), "")(
        (prefix + "optimizer").c_str(), po::value<std::string>(&optimizer)->default_value(optimizer), "")(
        (prefix + "nesterov").c_str(), po::value<bool>(&nesterov)->default_value(nesterov)->implicit_value(true), "")(
        (prefix + "levels").c_str(), po::value<std::vector<std::string>>(&levels)->multitoken(), "");
  }
  void Check(const std::string& prefix) const {
    OptionChecker c(prefix);
    c.Require(epochs > 0, "epochs", "must be > 0");
    c.Require(lr > 0, "lr", "must be > 0");
    c.Require(optimizer == "sgd" || optimizer == "adam", "optimizer", "must be sgd or adam");
    c.Throw();
  }
};

bool ParseArgs(CommandLine& cli, std::vector<std::string> args) {
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  return cli.Parse(static_cast<int>(argv.size()), argv.data());
}
}  // namespace

TEST_CASE("options: a config file sets keys and the command line overrides it", "[unit][util][options]") {
  TempDir tmp;
  mlfd_test::WriteText(tmp / "cfg.json",
                       R"({"train": {"epochs": 7, "lr": 0.5, "nesterov": true, "levels": ["a", "b"]}})");
  DemoOptions o;
  CommandLine cli({"demo", "purpose", "demo [options]", "demo --train.epochs 3"});
  o.Register(cli.options(), "train.");
  REQUIRE(ParseArgs(cli, {"demo", "--config", tmp / "cfg.json", "--train.lr", "0.01", "-v", "0"}));
  CHECK(o.epochs == 7);       // from the config
  CHECK(o.lr == 0.01);        // command line wins
  CHECK(o.nesterov);          // JSON true
  CHECK(o.levels == std::vector<std::string>{"a", "b"});
  nlohmann::json r = cli.Resolved();
  CHECK(r["train.epochs"] == 7);
  CHECK(r["train.lr"] == 0.01);
  CHECK(r["train.optimizer"] == "sgd");  // defaults are recorded too
  CHECK(r["threads"].get<int>() >= 1);
}

TEST_CASE("options: unknown keys and bad values are usage errors", "[unit][util][options]") {
  TempDir tmp;
  {
    DemoOptions o;
    CommandLine cli({"demo", "p", "u", "e"});
    o.Register(cli.options(), "");
    try {
      ParseArgs(cli, {"demo", "--epoch", "3"});
      FAIL("no exception");
    } catch (const UsageError& e) {
      CHECK(e.exit_code() == kExitUsage);
    }
  }
  {
    mlfd_test::WriteText(tmp / "bad.json", R"({"epochs": 3, "lrr": 1})");
    DemoOptions o;
    CommandLine cli({"demo", "p", "u", "e"});
    o.Register(cli.options(), "");
    CHECK_THROWS_WITH(ParseArgs(cli, {"demo", "--config", tmp / "bad.json"}), Catch::Contains("bad.json"));
  }
  {
    mlfd_test::WriteText(tmp / "broken.json", R"({"epochs": )");
    DemoOptions o;
    CommandLine cli({"demo", "p", "u", "e"});
    o.Register(cli.options(), "");
    CHECK_THROWS_WITH(ParseArgs(cli, {"demo", "--config", tmp / "broken.json"}),
                      Catch::Contains("malformed JSON"));
  }
  {
    DemoOptions o;
    o.epochs = 0;
    o.lr = -1;
    o.optimizer = "rmsprop";
    try {
      o.Check("train.");
      FAIL("no exception");
    } catch (const UsageError& e) {
      std::string w = e.what();  // every problem in one message
      CHECK(w.find("--train.epochs: must be > 0") != std::string::npos);
      CHECK(w.find("--train.lr: must be > 0") != std::string::npos);
      CHECK(w.find("--train.optimizer: must be sgd or adam") != std::string::npos);
    }
  }
}

TEST_CASE("options: missing positional argument", "[unit][util][options]") {
  std::string a;
  CommandLine cli({"demo", "p", "demo <in>", "e"});
  cli.AddPositional("in", &a, "input");
  CHECK_THROWS_AS(ParseArgs(cli, {"demo"}), UsageError);
  CommandLine cli2({"demo", "p", "demo <in>", "e"});
  cli2.AddPositional("in", &a, "input");
  REQUIRE(ParseArgs(cli2, {"demo", "x.h5", "-v", "0"}));
  CHECK(a == "x.h5");
}

TEST_CASE("options: a bare flag before an argument leaves the argument alone, and a flag given a bool value reads it",
          "[unit][util][options]") {
  auto parse = [](std::vector<std::string> args, bool* flag, std::string* in) {
    CommandLine cli({"demo", "p", "demo [--flag] <in>", "e"});
    cli.options().add_options()("flag", boost::program_options::value(flag)->default_value(false)->implicit_value(true), "a flag");
    cli.AddPositional("in", in, "input");
    return ParseArgs(cli, args);
  };
  bool flag = false;
  std::string in;
  REQUIRE(parse({"demo", "--flag", "x.h5", "-v", "0"}, &flag, &in));
  CHECK(flag);
  CHECK(in == "x.h5");
  REQUIRE(parse({"demo", "x.h5", "--flag", "-v", "0"}, &flag, &in));  // last or before an option
  CHECK(flag);
  REQUIRE(parse({"demo", "--flag", "off", "y.h5", "-v", "0"}, &flag, &in));
  CHECK_FALSE(flag);
  CHECK(in == "y.h5");
  REQUIRE(parse({"demo", "--flag=0", "z.h5", "-v", "0"}, &flag, &in));
  CHECK_FALSE(flag);
  CHECK(in == "z.h5");
  REQUIRE(parse({"demo", "-v", "0", "--flag", "TRUE", "w.h5"}, &flag, &in));
  CHECK(flag);
  CHECK(in == "w.h5");
}

TEST_CASE("config tokens flatten nested objects and arrays", "[unit][util][options]") {
  auto t = ConfigToTokens(nlohmann::json::parse(R"({"a": 1, "b": {"c": "x", "d": [1, 2]}, "e": false})"), "cfg");
  CHECK(t == std::vector<std::string>{"--a=1", "--b.c=x", "--b.d=1", "--b.d=2", "--e=false"});
  CHECK_THROWS_AS(ConfigToTokens(nlohmann::json::array(), "cfg"), UsageError);
}

TEST_CASE("json view errors carry the file and key path", "[unit][util]") {
  auto j = nlohmann::json::parse(R"({"sources": [{"kind": "idx", "images": 3}], "image": {"size": "x"}})");
  JsonView v(j, "m.json");
  auto s = v.Array("sources");
  CHECK_THROWS_WITH(s[0].Str("images"), "m.json: sources[0].images: expected a string, found number");
  CHECK_THROWS_WITH(v.Child("image").Int("size"), Catch::Contains("m.json: image.size: expected an integer"));
  CHECK_THROWS_WITH(s[0].Str("labels"), "m.json: sources[0].labels: missing required key");
  CHECK_THROWS_WITH(s[0].AllowOnly({"kind"}), Catch::Contains("sources[0].images: unknown key"));
  // Values held as int are refused beyond 32 bits instead of wrapping.
  auto k = nlohmann::json::parse(R"({"a": 4294967297, "b": -2147483648, "c": 7})");
  JsonView w(k, "k.json");
  CHECK(w.Int("a") == 4294967297LL);
  CHECK_THROWS_WITH(w.Int32("a"), "k.json: a: the integer 4294967297 is out of range (32 bits)");
  CHECK(w.Int32("b") == INT32_MIN);
  CHECK(w.Int32("c", 3) == 7);
  CHECK(w.Int32("d", 3) == 3);
}

TEST_CASE("durations are formatted for people", "[unit][util]") {
  CHECK(FormatDuration(7.25) == "7.2s");
  CHECK(FormatDuration(245) == "4m05s");
  CHECK(FormatDuration(3723) == "1h02m03s");
}

TEST_CASE("options: numbers that would silently mean something else are usage errors", "[unit][util][options]") {
  TempDir tmp;
  auto parse = [](std::vector<std::string> args) {
    DemoOptions o;
    uint64_t seed = 0;
    CommandLine cli({"demo", "p", "u", "e"});
    o.Register(cli.options(), "");
    cli.options().add_options()("seed", po::value(&seed)->default_value(0), "seed");
    args.insert(args.begin(), "demo");
    args.push_back("-v");
    args.push_back("0");
    ParseArgs(cli, args);
    return std::make_pair(seed, cli.Resolved());
  };
  CHECK(parse({"--seed", "7"}).first == 7);
  // A negative seed used to wrap to 2^64-1.
  CHECK_THROWS_WITH(parse({"--seed", "-1"}), Catch::Contains("--seed: must be a number >= 0 (got '-1')"));
  CHECK_THROWS_AS(parse({"--seed=-3"}), UsageError);
  // nan and inf parse as doubles; they are refused.
  CHECK_THROWS_WITH(parse({"--lr", "nan"}), Catch::Contains("--lr: must be a finite number"));
  CHECK_THROWS_WITH(parse({"--lr", "inf"}), Catch::Contains("--lr: must be a finite number"));
  mlfd_test::WriteText(tmp / "neg.json", R"({"seed": -2})");
  CHECK_THROWS_WITH(parse({"--config", tmp / "neg.json"}), Catch::Contains("--seed: must be a number >= 0"));
  // A key given twice in a --config file (JSON keeps the last silently).
  mlfd_test::WriteText(tmp / "twice.json", R"({"epochs": 3, "lr": 0.1, "epochs": 5})");
  CHECK_THROWS_WITH(parse({"--config", tmp / "twice.json"}), Catch::Contains("key \"epochs\" is given twice"));
  // More threads than cores: bounded, with a warning.
  const int cores = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  CHECK(parse({"--threads", "10000"}).second["threads"] == cores);
}

TEST_CASE("json: a key given twice in one object is refused, in nested objects too", "[unit][util][json]") {
  auto parse = [](const std::string& text) {
    std::istringstream in(text);
    return ParseJsonOnce(in, "m.json");
  };
  CHECK(parse(R"({"a": {"x": 1}, "b": [{"x": 2}, {"x": 3}]})")["b"][1]["x"] == 3);  // equal keys in sibling objects
  CHECK_THROWS_WITH(parse(R"({"image": {"size": 14}, "image": {"size": 28}})"),
                    Catch::Contains("m.json: key \"image\" is given twice in one object"));
  CHECK_THROWS_WITH(parse(R"({"sources": [{"kind": "idx", "kind": "folder"}]})"), Catch::Contains("\"kind\" is given twice"));
  CHECK_THROWS_WITH(parse(R"({"a": )"), Catch::Contains("m.json: malformed JSON"));
}
