#include "server/kserve/infer_fields.h"

#include <limits>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace attnserve {
namespace {

bool OneOf(absl::string_view name, absl::Span<const absl::string_view> names) {
  for (absl::string_view known : names) {
    if (name == known) return true;
  }
  return false;
}

absl::Status WrongKind(absl::string_view key, const InferParameter& value,
                       absl::string_view wanted) {
  return absl::InvalidArgumentError(absl::StrCat("parameters.", key, " is a ",
                                                 ParameterKind(value), "; must be ", wanted));
}

}  // namespace

std::string InputField(absl::string_view name) { return absl::StrCat("inputs[\"", name, "\"]"); }

bool HasParameter(const InferParameters& parameters, absl::string_view key) {
  return parameters.find(std::string(key)) != parameters.end();
}

absl::StatusOr<bool> BoolParameter(const InferParameters& parameters, absl::string_view key,
                                   bool fallback) {
  const auto it = parameters.find(std::string(key));
  if (it == parameters.end()) return fallback;
  if (const bool* value = std::get_if<bool>(&it->second)) return *value;
  return WrongKind(key, it->second, "a bool");
}

absl::StatusOr<int64_t> IntParameter(const InferParameters& parameters, absl::string_view key,
                                     int64_t fallback) {
  const auto it = parameters.find(std::string(key));
  if (it == parameters.end()) return fallback;
  if (const int64_t* value = std::get_if<int64_t>(&it->second)) return *value;
  if (const uint64_t* value = std::get_if<uint64_t>(&it->second)) {
    if (*value <= static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
      return static_cast<int64_t>(*value);
    }
    return absl::InvalidArgumentError(
        absl::StrCat("parameters.", key, "=", *value, " is past the int64 range"));
  }
  return WrongKind(key, it->second, "an int64");
}

absl::StatusOr<double> DoubleParameter(const InferParameters& parameters, absl::string_view key,
                                       double fallback) {
  const auto it = parameters.find(std::string(key));
  if (it == parameters.end()) return fallback;
  if (const double* value = std::get_if<double>(&it->second)) return *value;
  if (const int64_t* value = std::get_if<int64_t>(&it->second)) {
    return static_cast<double>(*value);
  }
  return WrongKind(key, it->second, "a double");
}

absl::StatusOr<std::string> StringParameter(const InferParameters& parameters,
                                            absl::string_view key, std::string fallback) {
  const auto it = parameters.find(std::string(key));
  if (it == parameters.end()) return fallback;
  if (const std::string* value = std::get_if<std::string>(&it->second)) return *value;
  return WrongKind(key, it->second, "a string");
}

absl::Status CheckParameterNames(const InferParameters& parameters,
                                 absl::Span<const absl::string_view> known,
                                 absl::string_view model) {
  for (const auto& [key, value] : parameters) {
    if (!OneOf(key, known)) {
      return absl::InvalidArgumentError(
          absl::StrCat("parameters.", key, " is not a parameter of model ", model, " (",
                       absl::StrJoin(known, ", "), ")"));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<std::map<std::string, const InferInput*>> InputsByName(
    const std::vector<InferInput>& inputs, absl::Span<const absl::string_view> known,
    absl::Span<const absl::string_view> required, absl::string_view model) {
  std::map<std::string, const InferInput*> found;
  for (const InferInput& input : inputs) {
    if (!OneOf(input.name, known)) {
      return absl::InvalidArgumentError(
          absl::StrCat(InputField(input.name), " is not an input of model ", model, " (",
                       absl::StrJoin(known, ", "), ")"));
    }
    if (!found.emplace(input.name, &input).second) {
      return absl::InvalidArgumentError(absl::StrCat(InputField(input.name), " is sent twice"));
    }
  }
  for (absl::string_view name : required) {
    if (found.find(std::string(name)) == found.end()) {
      return absl::InvalidArgumentError(
          absl::StrCat("inputs has no \"", name, "\" tensor; model ", model, " needs it"));
    }
  }
  return found;
}

absl::StatusOr<std::vector<std::string>> OutputsToReturn(const InferRequest& request,
                                                         absl::Span<const absl::string_view> known,
                                                         std::vector<std::string> defaults) {
  std::vector<std::string> names;
  for (const RequestedOutput& output : request.outputs) {
    if (!OneOf(output.name, known)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "outputs[\"", output.name, "\"] is not an output of model ", request.model_name, " (",
          absl::StrJoin(known, ", "), ")"));
    }
    for (const std::string& name : names) {
      if (name == output.name) {
        return absl::InvalidArgumentError(
            absl::StrCat("outputs[\"", output.name, "\"] is asked for twice"));
      }
    }
    names.push_back(output.name);
  }
  return names.empty() ? defaults : names;
}

}  // namespace attnserve
