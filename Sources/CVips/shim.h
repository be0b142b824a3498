// libvips for thumbnails (the `Images` build trait). libvips's API is variadic (NULL-terminated
// option lists), which Swift cannot call: these inline functions make the calls Parley needs with
// fixed arguments.
#ifndef PARLEY_CVIPS_SHIM_H
#define PARLEY_CVIPS_SHIM_H

#include <string.h>
#include <vips/vips.h>

/// libvips's warnings (a corrupt image's "error in tile…") are about user input: not for the logs.
static inline void parley_vips_quiet(const gchar *domain, GLogLevelFlags level, const gchar *message, gpointer data) {
    (void)domain;
    (void)level;
    (void)message;
    (void)data;
}

/// Starts libvips once per process; 0 on success. Only the loaders libvips marks as trusted stay
/// enabled (no ImageMagick, PDF or SVG loaders behind an image upload), one worker thread per
/// operation (the caller runs them on its own thread pool), and no operation cache (every upload
/// is new).
static inline int parley_vips_start(void) {
    if (VIPS_INIT("parley") != 0) return -1;
    g_log_set_handler("VIPS", G_LOG_LEVEL_WARNING | G_LOG_LEVEL_MESSAGE | G_LOG_LEVEL_INFO, parley_vips_quiet, NULL);
    vips_block_untrusted_set(TRUE);
    vips_concurrency_set(1);
    vips_cache_set_max(0);
    return 0;
}

typedef struct {
    /// The original's size as displayed (after its EXIF orientation).
    int width;
    int height;
    /// The thumbnail, WebP, without metadata; free with `parley_vips_free`.
    void *bytes;
    size_t length;
    char error[256];
} parley_thumbnail;

static inline void parley_vips_take_error(parley_thumbnail *out) {
    strncpy(out->error, vips_error_buffer(), sizeof(out->error) - 1);
    out->error[sizeof(out->error) - 1] = 0;
    vips_error_clear();
}

/// Reads the image at `path` and makes its thumbnail: at most `max_side` pixels on the long side
/// (never enlarged), rotated upright, saved as WebP without EXIF, XMP or ICC metadata. Refuses
/// images larger than `max_pixels` before decoding them, and truncated or corrupt ones. 0 on
/// success; otherwise `out->error` says why.
static inline int parley_vips_thumbnail(const char *path, int max_side, long long max_pixels, parley_thumbnail *out) {
    memset(out, 0, sizeof(*out));
    VipsImage *original = vips_image_new_from_file(path, "access", VIPS_ACCESS_SEQUENTIAL, NULL);
    if (original == NULL) {
        parley_vips_take_error(out);
        vips_thread_shutdown();
        return -1;
    }
    int width = vips_image_get_width(original);
    int height = vips_image_get_height(original);
    int orientation = vips_image_get_orientation(original);
    g_object_unref(original);
    if ((long long)width * (long long)height > max_pixels) {
        strncpy(out->error, "the image has too many pixels for a thumbnail", sizeof(out->error) - 1);
        vips_thread_shutdown();
        return -1;
    }
    if (orientation >= 5 && orientation <= 8) {
        out->width = height;
        out->height = width;
    } else {
        out->width = width;
        out->height = height;
    }
    VipsImage *thumbnail = NULL;
    if (vips_thumbnail(path, &thumbnail, max_side, "height", max_side, "size", VIPS_SIZE_DOWN, "fail_on", VIPS_FAIL_ON_TRUNCATED, NULL) != 0) {
        parley_vips_take_error(out);
        vips_thread_shutdown();
        return -1;
    }
    // No metadata leaves with the thumbnail: EXIF (GPS position, camera, time), XMP, IPTC, ICC and
    // comments are removed from a copy before it is saved (and `strip` asks the saver the same).
    VipsImage *clean = NULL;
    if (vips_copy(thumbnail, &clean, NULL) != 0) {
        g_object_unref(thumbnail);
        parley_vips_take_error(out);
        vips_thread_shutdown();
        return -1;
    }
    g_object_unref(thumbnail);
    gchar **fields = vips_image_get_fields(clean);
    for (int i = 0; fields != NULL && fields[i] != NULL; i++) {
        const char *field = fields[i];
        if (strncmp(field, "exif-", 5) == 0 || strcmp(field, "xmp-data") == 0 || strcmp(field, "iptc-data") == 0
            || strcmp(field, "icc-profile-data") == 0 || strncmp(field, "png-comment", 11) == 0 || strcmp(field, "gif-comment") == 0
            || strcmp(field, "orientation") == 0) {
            vips_image_remove(clean, field);
        }
    }
    g_strfreev(fields);
    int failed = vips_webpsave_buffer(clean, &out->bytes, &out->length, "Q", 80, "strip", TRUE, NULL);
    g_object_unref(clean);
    if (failed != 0) {
        parley_vips_take_error(out);
        out->bytes = NULL;
        out->length = 0;
    }
    vips_thread_shutdown();
    return failed != 0 ? -1 : 0;
}

static inline void parley_vips_free(void *bytes) { g_free(bytes); }

#endif
