// The suite's tiers (docs/build.md): tests/CMakeLists.txt registers each TEST_CASE with CTest under
// the label of its tier tag, so every TEST_CASE must carry exactly one of them.
#include <catch2/catch.hpp>

#include <string>
#include <vector>

TEST_CASE("tests: every test case has exactly one tier tag", "[unit][tiers]") {
  const std::vector<std::string> tiers = {"unit", "stage", "pipeline"};
  const auto& all = Catch::getRegistryHub().getTestCaseRegistry().getAllTests();
  REQUIRE(all.size() > 50);
  int units = 0;
  for (const auto& tc : all) {
    int n = 0;
    for (const auto& tag : tc.tags)
      for (const auto& t : tiers)
        if (tag == t) {
          ++n;
          if (t == "unit") ++units;
        }
    INFO(tc.name << " (" << tc.lineInfo.file << ":" << tc.lineInfo.line << ")");
    CHECK(n == 1);
  }
  CHECK(units > 20);
}
