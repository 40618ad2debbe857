// A small reader for MATLAB level-5 MAT-files (the format of `save` up to -v7): enough to read
// the numeric variables that dataset archives ship, such as Oxford Flowers-102's imagelabels.mat
// and setid.mat. Handles both byte orders, the small (packed) data element form, miCOMPRESSED
// elements (zlib) and every real numeric storage type, whatever the variable's MATLAB class.
// Cell, struct, char, sparse and object variables are listed but cannot be read as numbers.
// MAT 7.3 files are HDF5 files and are rejected with a message saying so.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace mlfd {
namespace mat5 {

struct Variable {
  std::string name;
  std::string class_name;     // "double", "uint8", ..., "cell", "struct", "char", "sparse"
  std::vector<int64_t> dims;  // MATLAB dimensions (at least two)
  bool numeric = false;       // a real or complex numeric (or logical) array
  bool complex = false;
  std::vector<double> data;  // real part in MATLAB (column-major) order; numeric only
};

// Every variable of the file, in file order. Throws Error naming the file on a malformed file.
std::vector<Variable> ReadAll(const std::string& path);

// The real part of numeric variable `name` as doubles (column-major; a row or column vector is
// simply its values in order). Throws Error naming the file and variable if it is missing or not
// numeric; `dims`, when given, receives the variable's dimensions.
std::vector<double> ReadNumeric(const std::string& path, const std::string& name,
                                std::vector<int64_t>* dims = nullptr);

}  // namespace mat5
}  // namespace mlfd
