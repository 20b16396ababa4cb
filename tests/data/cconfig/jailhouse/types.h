/*
 * Stand-in for Jailhouse's <jailhouse/types.h> so that the C configs written by
 * jailhouse.configgen compile in the tests without a Jailhouse tree.
 *
 * Copyright (c) python-jailhouse developers.  SPDX-License-Identifier: MIT
 */
#ifndef JH_TEST_TYPES_H
#define JH_TEST_TYPES_H
#include <linux/types.h>
#endif
