/* SPDX-License-Identifier: GPL-2.0-or-later */
/* QEMU and other users include the header by this path (subprojects/libvhost-user/...). */
#include "include/libvhost-user.h"
