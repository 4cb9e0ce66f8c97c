// A shared object that is not a task library (no entry point).
extern "C" int ferry_test_not_a_library() {
  return 42;
}
