// CPU emulation stand-in for CUDA's math_constants.h (see gpu/emu/README.md).
#pragma once
#include <cmath>
#define CUDART_INF_F INFINITY
