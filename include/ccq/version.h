/* version.h: the ccq version string. */
#ifndef CCQ_VERSION_H
#define CCQ_VERSION_H
#define CCQ_VERSION "0.1.0"
#endif
