// Starts the console once every page script has registered its pages. A
// new page (throttles, logs, cache, ...) is one more script before this
// one in index.html that calls Console.page({...}).
'use strict';

window.Console.start();
