# Varnish in front of an ultracache app: the app purges what it invalidated,
# by URL (PURGE /path) or by surrogate key (PURGE / with `xkey-purge: k1 k2`,
# vmod xkey from varnish-modules). Pair it with
#   CacheLayer::new(..).shared_max_age(..).surrogate_keys(HeaderName::from_static("xkey"))
# and VarnishPurger::new("http://<varnish>", VarnishMode::Url or Xkey).
vcl 4.1;

import xkey;

backend app {
    .host = "127.0.0.1";
    .port = "8000";
}

# Who may purge: the app servers.
acl purgers {
    "127.0.0.1";
    "::1";
}

sub vcl_recv {
    if (req.method == "PURGE") {
        if (client.ip !~ purgers) {
            return (synth(403, "Forbidden"));
        }
        if (req.http.xkey-purge) {
            set req.http.n-gone = xkey.purge(req.http.xkey-purge);
            return (synth(200, "Purged " + req.http.n-gone));
        }
        # Drops every variant of the URL.
        return (purge);
    }
}

sub vcl_deliver {
    # Surrogate keys are for Varnish, not for browsers.
    unset resp.http.xkey;
    if (obj.hits > 0) {
        set resp.http.X-Proxy-Cache = "HIT";
    } else {
        set resp.http.X-Proxy-Cache = "MISS";
    }
}
