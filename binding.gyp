{
  # The CPU addon every npm user can build (node-gyp). The CUDA build is CMakeLists.txt (cmake-js).
  # Sources: every .cc in native/{core,cpu,layer,addon}, native/cpu/test/ excluded (scripts/list-sources.cjs).
  # OpenBLAS: linked statically when libopenblas.a is installed (scripts/detect-openblas.cjs);
  # RT_NO_OPENBLAS=1 forces the builtin GEMM.
  "variables": {
    "rt_openblas_lib": "<!(node scripts/detect-openblas.cjs lib)",
    "rt_openblas_include": "<!(node scripts/detect-openblas.cjs include)"
  },
  "targets": [
    {
      "target_name": "rt",
      "sources": ["<!@(node scripts/list-sources.cjs)"],
      "include_dirs": [
        "<!(node -p \"require('node-addon-api').include_dir\")",
        "native"
      ],
      "defines": ["NAPI_VERSION=8", "NAPI_CPP_EXCEPTIONS", "NODE_API_SWALLOW_UNTHROWABLE_EXCEPTIONS"],
      "cflags!": ["-fno-exceptions", "-fno-rtti"],
      "cflags_cc!": ["-fno-exceptions", "-fno-rtti", "-std=gnu++17"],
      "cflags": ["-pthread", "-fvisibility=hidden"],
      "cflags_cc": ["-std=c++17", "-fexceptions", "-O3", "-fvisibility=hidden"],
      "ldflags": ["-pthread", "-Wl,-z,now"],
      "conditions": [
        ["target_arch=='x64'", {
          "cflags_cc": ["-march=x86-64-v3"]
        }],
        ["rt_openblas_lib!=''", {
          "defines": ["RT_OPENBLAS"],
          "include_dirs": ["<(rt_openblas_include)"],
          "ldflags": ["-Wl,--exclude-libs,ALL"],
          "libraries": ["<(rt_openblas_lib)", "-lpthread", "-lm"]
        }]
      ]
    }
  ]
}
