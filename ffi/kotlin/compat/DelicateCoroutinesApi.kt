// Compile-check only (ffi/kotlin/check.sh); never shipped. The generated bindings
// import this opt-in marker annotation (kotlinx.coroutines 1.5+) without using it;
// Debian's kotlinx-coroutines, the only one reachable here, is 1.0.1 and predates it.
// Everything else in the bindings compiles against the real 1.0.1 jars. An app builds
// with a current kotlinx-coroutines from Maven Central and leaves this file out.
package kotlinx.coroutines

@Retention(AnnotationRetention.BINARY)
annotation class DelicateCoroutinesApi
